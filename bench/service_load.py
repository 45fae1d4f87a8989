"""The service under load, started as in production: `kommunrouter migrate`, then `kommunrouter serve` (one
worker) on a free loopback port, with a SQLite audit log and then a PostgreSQL one (a throwaway database).

An asyncio load generator keeps N requests in flight (N = 1, 8, 32) on N keep-alive connections, each a
POST /v1/classify with a text of the test split, bounded in requests and seconds. Per level: throughput,
latency p50/p95/p99, errors, the audit rows the level added (each answered decision must have one), the
server's and the load generator's CPU time per request, and the mean texts per model call (from /metrics).
The engine the server chose at start-up is recorded (GET /v1/model). Throughput is compared with the model's
in-process batched throughput on that engine from engines.json (else (d) of inference.json, else measured here) and
with OpenVINO's raw batched rate on the 12-layer shape from engines.json.

    python -m bench.service_load [--artifact models/default]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.measure import (
    DEFAULT_ARTIFACT,
    DEFAULT_TEXTS,
    RESULTS_DIR,
    latency_ms,
    machine_info,
    read_texts,
    require,
    target,
    write_result,
)

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 180.0
WARMUP_REQUESTS = 16
ERROR_SAMPLES = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc; None elsewhere)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    # Fields after the command name (which may hold spaces) start at the state; utime and stime are 14 and 15.
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


def _kommunrouter() -> list[str]:
    """The kommunrouter command of the code in the working directory (the installed script may belong to another
    checkout of an editable install)."""
    return [sys.executable, "-c", "from app.cli import main; main()"]


@contextmanager
def running_server(artifact_dir: Path, database_url: str, work: Path) -> Iterator[Server]:
    """Migrate the database, start the service, wait until /readyz answers 200; stop it gracefully after."""
    env = os.environ | {
        "KOMMUNROUTER_MODEL_DIR": str(artifact_dir.resolve()),
        "KOMMUNROUTER_DATABASE_URL": database_url,
        "KOMMUNROUTER_OPEN_ACCESS": "true",
    }
    subprocess.run([*_kommunrouter(), "migrate"], env=env, check=True, capture_output=True)
    port = free_port()
    log = work / f"server-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*_kommunrouter(), "serve", "--host", LOOPBACK, "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://{LOOPBACK}:{port}", log)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=server.base_url, trust_env=False, timeout=5) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    tail = server.log.read_text(errors="replace")[-2000:]
    raise SystemExit(f"the service did not become ready at {server.base_url}; its log ends with:\n{tail}")


@dataclass
class LevelResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, seconds: float, failure: str | None) -> None:
        self.latencies.append(seconds)
        if failure is not None:
            self.errors += 1
            if len(self.error_samples) < ERROR_SAMPLES:
                self.error_samples.append(failure)


class LoopbackConnection:
    """A keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer, and nothing else.

    The load generator shares the 2 cores with the server it measures, so its cost per request must be small:
    httpx spends 1.7 ms (1 in flight) to 4.4 ms (32 in flight) of CPU per request here, as much as the service
    itself; this costs about 0.1 ms.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in header_lines if ": " in line)
            if headers.get("transfer-encoding") == "chunked":
                payload = b""
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    payload += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                payload = await reader.readexactly(int(headers.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            raise
        if headers.get("connection") == "close":
            await self.close()
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def generate_load(
    base_url: str, texts: Sequence[str], *, concurrency: int, max_requests: int, max_seconds: float
) -> LevelResult:
    """``concurrency`` clients, each on its own connection sending its next request when the last one was
    answered, until ``max_requests`` were sent or ``max_seconds`` passed. An answer other than 200 with a
    department, or a broken connection, is an error."""
    url = httpx.URL(base_url)
    bodies = [json.dumps({"text": text}).encode() for text in texts]
    result = LevelResult()
    numbers = itertools.count()
    started = time.perf_counter()
    deadline = started + max_seconds

    async def user() -> None:
        connection = LoopbackConnection(url.host, url.port or 80)
        while (number := next(numbers)) < max_requests and time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                status, payload = await connection.post("/v1/classify", bodies[number % len(bodies)])
                failure = None if status == 200 and b'"department"' in payload else f"{status}: {payload[:200]!r}"
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                failure = repr(exc)
            result.record(time.perf_counter() - sent, failure)
        await connection.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def audit_rows(database_url: str) -> int:
    from sqlalchemy import func, select

    from app.audit.database import make_engine
    from app.audit.models import Decision

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(Decision)).scalar_one())
    finally:
        engine.dispose()


def _metric_sums(base_url: str) -> dict[str, float]:
    """Sums and counts of the service's histograms (texts per model call and decisions per audit commit)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", trust_env=False, timeout=30).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith(("_sum", "_count")) and not sample.labels
    }


def _mean(after: dict[str, float], before: dict[str, float], name: str) -> float | None:
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    return (after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)) / count if count else None


def run_level(
    server: Server, database_url: str, texts: Sequence[str], concurrency: int, max_requests: int, max_seconds: float
) -> dict[str, Any]:
    rows_before, metrics_before = audit_rows(database_url), _metric_sums(server.base_url)
    server_cpu_before, client_cpu_before = _cpu_seconds(server.process.pid), time.process_time()
    level = asyncio.run(
        generate_load(
            server.base_url, texts, concurrency=concurrency, max_requests=max_requests, max_seconds=max_seconds
        )
    )
    client_cpu = time.process_time() - client_cpu_before
    server_cpu_after = _cpu_seconds(server.process.pid)
    metrics_after = _metric_sums(server.base_url)
    requests = len(level.latencies)
    answered = requests - level.errors
    rows = audit_rows(database_url) - rows_before
    server_cpu = None if server_cpu_before is None or server_cpu_after is None else server_cpu_after - server_cpu_before
    return {
        "concurrency": concurrency,
        "requests": requests,
        "answered": answered,
        "errors": level.errors,
        "error_samples": level.error_samples,
        "seconds": level.seconds,
        "texts_per_s": answered / level.seconds,
        "latency_ms": latency_ms(level.latencies),
        "audit_rows": rows,
        "lost_audit_rows": answered - rows,
        "mean_model_batch": _mean(metrics_after, metrics_before, "kommunrouter_model_batch_size"),
        "mean_model_call_ms": None
        if (mean_call := _mean(metrics_after, metrics_before, "kommunrouter_model_inference_seconds")) is None
        else mean_call * 1000,
        "mean_audit_batch": _mean(metrics_after, metrics_before, "kommunrouter_audit_batch_size"),
        "server_cpu_ms_per_request": None if server_cpu is None or not requests else server_cpu / requests * 1000,
        "load_generator_cpu_ms_per_request": client_cpu / requests * 1000 if requests else None,
    }


def served_engine(base_url: str) -> dict[str, Any]:
    """The engine the server chose at start-up, as GET /v1/model shows it."""
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        engine: dict[str, Any] = client.get("/v1/model").json()["engine"]
    return engine


def run_backend(
    artifact_dir: Path, database_url: str, texts: Sequence[str], levels: Sequence[tuple[int, int]], max_seconds: float
) -> dict[str, Any]:
    """Every load level against one server on one audit database; warm-up requests first (not measured)."""
    with tempfile.TemporaryDirectory() as tmp, running_server(artifact_dir, database_url, Path(tmp)) as server:
        engine = served_engine(server.base_url)
        warmup = asyncio.run(
            generate_load(server.base_url, texts, concurrency=4, max_requests=WARMUP_REQUESTS, max_seconds=max_seconds)
        )
        results = [run_level(server, database_url, texts, c, n, max_seconds) for c, n in levels]
        requests = len(warmup.latencies) + sum(level["requests"] for level in results)
        answered = requests - warmup.errors - sum(level["errors"] for level in results)
    return {
        "engine": engine,
        "levels": results,
        "requests_total": requests,
        "answered_total": answered,
        # Counted after the server stopped: nothing still queued can be missing.
        "audit_rows_total": audit_rows(database_url),
    }


@contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """A new database on the local PostgreSQL server, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"kommunrouter_bench_{os.getpid()}"
    admin = POSTGRES_SERVER.replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def model_reference(
    inference_json: Path, artifact_dir: Path, texts: list[str], engines_json: Path | None = None
) -> dict[str, Any]:
    """The model's own batched throughput and batch-1 latency, in process, on the engine the service chooses: from
    engines.json (its service row) when it measured this artifact, else (d) of inference.json, else measured now
    (before the server starts, so the two never share the CPU). With engines.json, also OpenVINO's raw batched rate
    on the 12-layer shape, which the served rate is held to on AMX machines."""
    from bench.inference import BATCH_SIZE, SERVICE_WAY, measure_interleaved, service_way

    if engines_json is not None and engines_json.exists():
        engines = json.loads(engines_json.read_text(encoding="utf-8"))
        if Path(engines["setup"]["artifact"]).resolve() == artifact_dir.resolve():
            service = engines["ways"]["service"]
            openvino = [
                engines["ways"][name]["batch_32"]["texts_per_s"]
                for name in ("openvino_bf16", "openvino_bf16_fp32_graph")
                if name in engines["ways"]
            ]
            return {
                "source": str(engines_json),
                "engine": engines["auto_startup"]["engine"],
                "batched_texts_per_s": service["batch_32"]["texts_per_s"],
                "batch_1_p50_ms": service["batch_1"]["latency_ms"]["p50"],
                "openvino_raw_batched_texts_per_s": max(openvino) if openvino else None,
            }
    if inference_json.exists():
        inference = json.loads(inference_json.read_text(encoding="utf-8"))
        if Path(inference["setup"]["artifact"]).resolve() == artifact_dir.resolve():
            d = inference["ways"][SERVICE_WAY]
            return {
                "source": str(inference_json),
                "batched_texts_per_s": d["batch_32"]["texts_per_s"],
                "batch_1_p50_ms": d["batch_1"]["latency_ms"]["p50"],
            }
    ways = {SERVICE_WAY: service_way(artifact_dir)}
    batched = measure_interleaved(ways, [texts[i : i + BATCH_SIZE] for i in range(0, len(texts), BATCH_SIZE)], 2)
    single = measure_interleaved(ways, [[text] for text in texts[:50]], 1)
    return {
        "source": "measured by service_load.py",
        "batched_texts_per_s": 2 * len(texts) / sum(batched[SERVICE_WAY].seconds),
        "batch_1_p50_ms": latency_ms(single[SERVICE_WAY].seconds)["p50"],
    }


def targets(backends: dict[str, dict[str, Any]], reference: dict[str, Any]) -> list[dict[str, Any]]:
    result = []
    for name, backend in backends.items():
        if "skipped" in backend:
            result.append(target(f"{name}_ran", f"{name}: the benchmark ran", None, False))
            continue
        levels = {level["concurrency"]: level for level in backend["levels"]}
        errors = sum(level["errors"] for level in backend["levels"])
        lost = backend["answered_total"] - backend["audit_rows_total"]
        result += [
            target(f"{name}_errors", f"{name}: zero errors", errors, errors == 0),
            target(f"{name}_lost_audit_rows", f"{name}: zero lost audit rows", lost, lost == 0),
        ]
        if 32 in levels:
            share = levels[32]["texts_per_s"] / reference["batched_texts_per_s"]
            result.append(
                target(
                    f"{name}_c32_share_of_model",
                    f"{name}: concurrency 32 >= 70% of the model's in-process batched throughput",
                    share,
                    share >= 0.7,
                )
            )
            openvino = reference.get("openvino_raw_batched_texts_per_s")
            if openvino:
                rate = levels[32]["texts_per_s"]
                result.append(
                    target(
                        f"{name}_c32_vs_openvino_raw",
                        f"{name}: concurrency 32 >= OpenVINO's raw batched rate on the 12-layer shape "
                        f"({openvino:.0f} texts/s; needs the distilled student)",
                        rate / openvino,
                        rate >= openvino,
                    )
                )
        if 1 in levels:
            p50 = levels[1]["latency_ms"]["p50"]
            limit = reference["batch_1_p50_ms"] + 5
            result.append(
                target(
                    f"{name}_c1_p50_ms",
                    f"{name}: p50 at concurrency 1 <= model batch-1 p50 + 5 ms ({limit:.1f})",
                    p50,
                    p50 <= limit,
                )
            )
            result.append(
                target(f"{name}_c1_p50_8ms", f"{name}: p50 at concurrency 1 <= 8 ms (AMX machine)", p50, p50 <= 8)
            )
    return result


def run_service_load(
    *,
    artifact_dir: Path,
    texts_path: Path,
    levels: Sequence[tuple[int, int]],
    max_seconds: float,
    backends: Sequence[str],
    inference_json: Path,
    engines_json: Path | None = None,
) -> dict[str, Any]:
    import psycopg

    require(artifact_dir / "manifest.json", "the exported artifact")
    texts = read_texts(texts_path)
    reference = model_reference(inference_json, artifact_dir, texts, engines_json)
    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        print(f"service load: {backend}")
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results[backend] = run_backend(artifact_dir, f"sqlite:///{tmp}/audit.db", texts, levels, max_seconds)
            continue
        try:
            with throwaway_postgres_database() as url:
                results[backend] = run_backend(artifact_dir, url, texts, levels, max_seconds)
        except psycopg.OperationalError as exc:
            results[backend] = {"skipped": f"PostgreSQL at {POSTGRES_SERVER} is not reachable: {exc}"}
    for outcome in results.values():
        for level in outcome.get("levels", []):
            level["ratio_to_model_batched"] = level["texts_per_s"] / reference["batched_texts_per_s"]
    return {
        "machine": machine_info(),
        "setup": {
            "artifact": str(artifact_dir),
            "texts": str(texts_path),
            "levels": [{"concurrency": c, "max_requests": n} for c, n in levels],
            "max_seconds_per_level": max_seconds,
            "warmup_requests": WARMUP_REQUESTS,
            "endpoint": "POST /v1/classify",
        },
        "model_reference": reference,
        "backends": results,
        "targets": targets(results, reference),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="the artifact the service serves")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="JSONL reports sent (cycled)")
    parser.add_argument("--concurrency", default="1,8,32", help="requests in flight per level")
    parser.add_argument("--requests", default="200,600,1200", help="most requests per level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest time per level")
    parser.add_argument("--backends", default="sqlite,postgres", help="audit databases: sqlite, postgres")
    parser.add_argument("--inference-json", type=Path, default=RESULTS_DIR / "inference.json")
    parser.add_argument("--engines-json", type=Path, default=RESULTS_DIR / "engines.json")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "service_load.json")
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    requests = [int(n) for n in args.requests.split(",")]
    if len(concurrency) != len(requests):
        parser.error("--concurrency and --requests need as many values")
    result = run_service_load(
        artifact_dir=args.artifact,
        texts_path=args.texts,
        levels=list(zip(concurrency, requests, strict=True)),
        max_seconds=args.max_seconds,
        backends=args.backends.split(","),
        inference_json=args.inference_json,
        engines_json=args.engines_json,
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
