"""The CUDA execution-provider check, for a machine with an NVIDIA GPU (none is on the build machines).

Run it there, after `pip uninstall -y onnxruntime && pip install onnxruntime-gpu==1.31.1` in the service's venv:

    python -m bench.cuda_check --artifact models/default --data data/reports/test.jsonl

It loads the artifact the way the service does with KOMMUNROUTER_EXECUTION_PROVIDER=cuda and KOMMUNROUTER_ENGINE=auto,
checks that `auto` kept onnxruntime on CUDA (CUDA stays on onnxruntime; the service falls back to CPU silently but
for a warning) and that it passed the artifact's parity sample, compares every prediction with the engine `auto`
picks on the CPU on the same texts, times both, and writes bench/results/cuda_check.json. It exits non-zero when
CUDA is not used, the parity sample failed, or the department predictions disagree on more than 1% of the texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from app.inference.model import ReportModel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("models/default"))
    parser.add_argument("--data", type=Path, default=Path("data/reports/test.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/cuda_check.json"))
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    result: dict[str, object] = {"texts": len(texts)}
    predictions = {}
    for provider in ("cuda", "cpu"):
        model = ReportModel.load(args.artifact, engine="auto", execution_provider=provider, intra_op_threads=2)
        model.predict(texts[:8])  # warm-up: CUDA kernels and memory arenas are set up on the first calls
        started = time.perf_counter()
        predictions[provider] = model.predict(texts)
        seconds = time.perf_counter() - started
        choice = model.engine_choice
        result[provider] = {
            "engine": model.engine.name,
            "provider": model.provider,
            "max_batch_tokens": model.max_batch_tokens,
            "texts_per_s": round(len(texts) / seconds, 1),
            "parity_passed": choice is not None and choice.passed,
            "parity_agreement": None if choice is None else choice.chosen.agreement,
            "startup_s": None if choice is None else round(choice.startup_s, 2),
        }
    agreement = sum(
        a.department[0].label == b.department[0].label
        for a, b in zip(predictions["cuda"], predictions["cpu"], strict=True)
    ) / len(texts)
    result["department_agreement"] = agreement
    cuda: dict[str, object] = result["cuda"]  # type: ignore[assignment]
    on_cuda = cuda["provider"] == "CUDAExecutionProvider" and cuda["engine"] == "onnxruntime-cuda"
    result["ok"] = on_cuda and bool(cuda["parity_passed"]) and agreement >= 0.99
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
