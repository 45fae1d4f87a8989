"""The model's scores beside the baselines', on dev and test, from the training run's evaluation; and the
learning curve (pretrained vs random initialisation vs TF-IDF on growing shares of train) when it was run.

    python -m bench.accuracy [--run runs/default]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import DEFAULT_RUN, RESULTS_DIR, require, write_result
from training.curve_summary import read_learning_curve
from training.run_dir import HeadlineMetrics, RunDir


def model_scores(split: dict[str, Any]) -> dict[str, float | None]:
    """The headline metrics of a split, with severity macro-F1 and MAE beside them."""
    headline = HeadlineMetrics.of_split(split).as_record()
    return headline | {"severity_macro_f1": split["severity"]["macro_f1"], "severity_mae": split["severity"]["mae"]}


def baseline_scores(scores: dict[str, float]) -> dict[str, float | None]:
    """A baseline's scores under the same names as the model's."""
    headline = HeadlineMetrics.of_scores(scores).as_record()
    return headline | {"severity_macro_f1": scores.get("severity_macro_f1"), "severity_mae": scores.get("severity_mae")}


def learning_curve_table(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and standard deviation) of the test scores per method and number of training examples over the
    seeds, smallest first."""
    rows = []
    for entry in sorted(summary, key=lambda e: (e["method"], e["n_examples"])):
        row: dict[str, Any] = {key: entry[key] for key in ("method", "n_examples", "seeds")}
        for metric in HeadlineMetrics.names():
            row[metric] = entry[f"{metric}_mean"]
            row[f"{metric}_std"] = entry[f"{metric}_std"]
        rows.append(row)
    return rows


def collect_accuracy(run_dir: Path, learning_curve: Path) -> dict[str, Any]:
    run = RunDir(run_dir)
    require(run.evaluation_path, "the evaluation of the training run")
    evaluation = run.require_evaluation()
    splits = evaluation.splits
    curve = read_learning_curve(learning_curve) if learning_curve.exists() else None
    return {
        "run": str(run_dir),
        "reports": {split: metrics["n"] for split, metrics in splits.items()},
        "training_seconds": evaluation.training_seconds,
        "model": {split: model_scores(metrics) for split, metrics in splits.items()},
        "baselines": {
            name: {split: baseline_scores(scores) for split, scores in by_split.items()}
            for name, by_split in evaluation.baselines.items()
        },
        "learning_curve": None
        if curve is None
        else {
            "source": str(learning_curve),
            "table": learning_curve_table(curve["summary"]),
            "points": curve["rows"],
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="training run with evaluation/")
    parser.add_argument("--learning-curve", type=Path, default=RESULTS_DIR / "learning_curve.json")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "accuracy.json")
    args = parser.parse_args(argv)
    write_result(args.out, collect_accuracy(args.run, args.learning_curve))


if __name__ == "__main__":
    main()
