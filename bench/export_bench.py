"""What exporting a training run checks and costs: fp32 parity with PyTorch, int8 department agreement, dev
scores of every graph, batch-1 latency and file size of each graph (fp32, optimised, int8).

It runs the export's own checks (``training.export.check_and_build_graph``) on the run's dev split, in a
temporary directory: the artifact in models/ is not touched.

    python -m bench.export_bench [--run runs/default]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import DEFAULT_RUN, RESULTS_DIR, THREADS, machine_info, require, target, write_result
from training.run_dir import RunDir


def run_export_bench(run_dir: Path) -> dict[str, Any]:
    import torch

    from training.data import load_reports, load_taxonomy
    from training.export import FP32_TOLERANCE, INT8_MIN_AGREEMENT, check_and_build_graph
    from training.model import encode_texts, load_checkpoint, pad_token_id

    run = RunDir(run_dir)
    require(run.checkpoint_dir, "the fine-tuned checkpoint")
    torch.set_num_threads(THREADS)
    model, tokenizer, labels = load_checkpoint(run.path)
    config = run.config()
    reports = load_reports(config.dev_file, load_taxonomy(run.taxonomy_path))
    encoded = encode_texts(tokenizer, [r.text for r in reports], config.max_length, text_prefix=config.text_prefix)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, report, _ = check_and_build_graph(
            model, reports, labels, encoded, pad_token_id(tokenizer), Path(tmp), "int8"
        )
    seconds = time.perf_counter() - started
    largest_diff = max(report.fp32_max_abs_diff.values())
    agreement = report.int8_department_agreement
    return {
        "machine": machine_info(),
        "setup": {"run": str(run_dir), "dev_file": str(config.dev_file), "dev_reports": len(reports)},
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
