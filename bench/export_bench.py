"""What exporting a training run checks and costs: fp32 parity with PyTorch, int8 department agreement, dev
scores of every graph, batch-1 latency and file size of each graph (fp32, optimised, int8).

It runs the export's own checks (``training.export.check_and_build_graph``) on the run's dev split, in a
temporary directory: the artifact in models/ is not touched.

    python -m bench.export_bench [--run runs/default]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import DEFAULT_RUN, RESULTS_DIR, THREADS, machine_info, require, target, write_result


def run_export_bench(run_dir: Path) -> dict[str, Any]:
    import torch

    from training.data import load_reports, load_taxonomy
    from training.export import FP32_TOLERANCE, INT8_MIN_AGREEMENT, check_and_build_graph
    from training.model import encode_texts, load_checkpoint

    require(run_dir / "checkpoint", "the fine-tuned checkpoint")
    torch.set_num_threads(THREADS)
    model, tokenizer, labels = load_checkpoint(run_dir)
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    reports = load_reports(Path(config["dev_file"]), load_taxonomy(run_dir / "taxonomy.json"))
    encoded = encode_texts(tokenizer, [r.text for r in reports], int(config["max_length"]))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, report = check_and_build_graph(
            model, reports, labels, encoded, tokenizer.token_to_id("<pad>") or 0, Path(tmp), "int8"
        )
    seconds = time.perf_counter() - started
    largest_diff = max(report.fp32_max_abs_diff.values())
    agreement = report.int8_department_agreement
    return {
        "machine": machine_info(),
        "setup": {"run": str(run_dir), "dev_file": config["dev_file"], "dev_reports": len(reports)},
        "export_seconds": seconds,
        **dataclasses.asdict(report),
        "targets": [
            target(
                "fp32_parity",
                f"fp32 graph logits within {FP32_TOLERANCE:g} of PyTorch",
                largest_diff,
                largest_diff <= FP32_TOLERANCE,
            ),
            target(
                "int8_department_agreement",
                f"int8 department agreement with fp32 >= {INT8_MIN_AGREEMENT:.0%}",
                agreement,
                agreement is not None and agreement >= INT8_MIN_AGREEMENT,
            ),
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="training run with the checkpoint")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "export.json")
    args = parser.parse_args(argv)
    write_result(args.out, run_export_bench(args.run))


if __name__ == "__main__":
    main()
