"""What the benchmarks share: where results go, the texts they run on, latency summaries, machine facts."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path("bench/results")
DEFAULT_RUN = Path("runs/default")
DEFAULT_ARTIFACT = Path("models/default")
DEFAULT_TEXTS = Path("data/reports/test.jsonl")
# Threads per model call: the machine has 2 cores (ENVIRONMENT.md).
THREADS = 2
TRAIN_FIRST = "run `make train` first (it trains runs/default and exports models/default)"


def require(path: Path, what: str) -> None:
    """Exit with one clear line when a prerequisite is missing."""
    if not path.exists():
        raise SystemExit(f"{path} not found ({what}): {TRAIN_FIRST}")


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    """The report texts of a JSONL data file, in file order."""
    require(path, "the report texts")
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts[:limit] if limit else texts


def latency_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of durations, in milliseconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
        "count": len(values),
    }


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_facts() -> dict[str, Any]:
    model, flags = platform.processor(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return {"model": model, "logical_cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def machine_info() -> dict[str, Any]:
    """The machine and software a result was measured with (the load average shows how shared it was)."""
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_facts(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "packages": {
            name: _package_version(name) for name in ("torch", "onnxruntime", "transformers", "tokenizers", "numpy")
        },
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def target(name: str, goal: str, value: float | None, met: bool | None) -> dict[str, Any]:
    """One line of a result's targets: what was asked, what was measured, whether it was reached."""
    return {"name": name, "target": goal, "value": value, "met": met}
