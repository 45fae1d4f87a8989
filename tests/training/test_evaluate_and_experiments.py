"""`kommunrouter evaluate` on a checkpoint and on an artifact, and the resumable learning-curve experiment."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import FIXTURES, TAXONOMY, tiny_config_overrides
from training.experiments import learning_curve


def test_evaluate_checkpoint_and_artifact_agree(tiny_run: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    results = {}
    for name, model in (("checkpoint", tiny_run), ("artifact", tiny_artifact)):
        out = tmp_path / name
        result = runner.invoke(
            cli,
            [
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(FIXTURES / "dev.jsonl"),
                "--out",
                str(out),
                "--taxonomy",
                str(TAXONOMY),
            ],
        )
        assert result.exit_code == 0, result.output
        assert "| dev |" in result.output
        results[name] = json.loads((out / "evaluation.json").read_text())["splits"]["dev"]
        assert (out / "dev_department_confusion.png").stat().st_size > 0
    for task in ("department", "sentiment", "severity"):
        assert results["checkpoint"][task]["confusion_matrix"] == results["artifact"][task]["confusion_matrix"]
    assert results["checkpoint"]["keywords"]["f1"] == results["artifact"]["keywords"]["f1"]
    # MAE is the mean level distance of the confusion matrix, the same for both
    matrix = results["checkpoint"]["severity"]["confusion_matrix"]
    distance = sum(abs(i - j) * count for i, row in enumerate(matrix) for j, count in enumerate(row))
    n = sum(map(sum, matrix))
    assert results["checkpoint"]["severity"]["mae"] == results["artifact"]["severity"]["mae"] == distance / n


def test_learning_curve_writes_points_and_resumes(tiny_base_dir: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    overrides = [o for o in tiny_config_overrides(tiny_base_dir, tmp_path / "unused") if not o.startswith("output_dir")]
    overrides.append("epochs=1")
    kwargs = {
        "out_dir": tmp_path / "results",
        "work_dir": tmp_path / "work",
        "fractions": [0.5, 1.0],
        "seeds": [3],
        "methods": ["pretrained", "tfidf"],
        "overrides": overrides,
    }
    points = learning_curve(**kwargs)  # type: ignore[arg-type]
    assert sorted((p["method"], p["fraction"]) for p in points) == [
        ("pretrained", 0.5),
        ("pretrained", 1.0),
        ("tfidf", 0.5),
        ("tfidf", 1.0),
    ]
    assert all(p["n_examples"] > 0 and p["department_macro_f1"] is not None for p in points)
    assert (tmp_path / "results" / "learning_curve.png").stat().st_size > 0
    saved = json.loads((tmp_path / "results" / "learning_curve.json").read_text())
    assert len(saved) == 4

    def no_training(*args: object, **kw: object) -> None:
        raise AssertionError("finished points must not be trained again")

    monkeypatch.setattr("training.experiments.train", no_training)
    assert len(learning_curve(**kwargs)) == 4  # type: ignore[arg-type]
