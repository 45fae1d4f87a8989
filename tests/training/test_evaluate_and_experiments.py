"""`kommunrouter evaluate` on a checkpoint and on an artifact, and the resumable learning-curve experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import FIXTURES, TAXONOMY, tiny_config_overrides
from training import experiments
from training.curve_summary import read_learning_curve
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
    # the learning curve's own recipe (description heads), not the shared tiny model's linear heads
    overrides = [
        o
        for o in tiny_config_overrides(tiny_base_dir, tmp_path / "unused")
        if not o.startswith(("output_dir", "head_init"))
    ]
    overrides.append("epochs=1")
    kwargs = {
        "out_dir": tmp_path / "results",
        "work_dir": tmp_path / "work",
        "fractions": [0, 0.5, 1.0],
        "seeds": [3, 4],
        "methods": ["pretrained", "tfidf", "zero_shot"],
        "all_seeds_up_to": 0.5,
        "overrides": overrides,
    }
    result = learning_curve(**kwargs)  # type: ignore[arg-type]
    rows = result["rows"]
    # every seed up to 50%, the first above; zero-shot only at 0 (one seed: it has no random choice)
    assert sorted((p["method"], p["fraction"], p["seed"]) for p in rows) == [
        ("pretrained", 0.5, 3),
        ("pretrained", 0.5, 4),
        ("pretrained", 1.0, 3),
        ("tfidf", 0.5, 3),
        ("tfidf", 0.5, 4),
        ("tfidf", 1.0, 3),
        ("zero_shot", 0, 3),
    ]
    assert all(p["department_macro_f1"] is not None for p in rows)
    assert [p["n_examples"] for p in rows if p["method"] == "zero_shot"] == [0]
    assert all(p["n_examples"] > 0 for p in rows if p["method"] != "zero_shot")
    half = [p for p in rows if (p["method"], p["fraction"]) == ("pretrained", 0.5)]
    entry = next(s for s in result["summary"] if (s["method"], s["fraction"]) == ("pretrained", 0.5))
    values = [p["department_macro_f1"] for p in half]
    assert entry["seeds"] == 2
    assert entry["department_macro_f1_mean"] == pytest.approx(sum(values) / 2)
    assert entry["department_macro_f1_std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert (tmp_path / "results" / "learning_curve.png").stat().st_size > 0
    saved = json.loads((tmp_path / "results" / "learning_curve.json").read_text())
    assert saved["rows"] == rows and len(saved["summary"]) == 5

    # interrupted before a trained point was written: only that point is trained again
    points_file = tmp_path / "work" / "points.jsonl"
    lines = points_file.read_text().splitlines()
    lost = max(i for i, line in enumerate(lines) if json.loads(line)["method"] == "pretrained")
    points_file.write_text("".join(line + "\n" for i, line in enumerate(lines) if i != lost))
    trained: list[object] = []
    real_train = experiments.train

    def counting_train(config):  # type: ignore[no-untyped-def]
        trained.append(config)
        return real_train(config)

    monkeypatch.setattr("training.experiments.train", counting_train)
    assert len(learning_curve(**kwargs)["rows"]) == 7  # type: ignore[arg-type]
    missing = json.loads(lines[lost])
    assert len(trained) == 1
    assert trained[0].output_dir.name == f"pretrained-{missing['fraction']:g}-{missing['seed']}"  # type: ignore[attr-defined]

    def no_training(*args: object, **kw: object) -> None:
        raise AssertionError("finished points must not be trained again")

    monkeypatch.setattr("training.experiments.train", no_training)
    assert len(learning_curve(**kwargs)["rows"]) == 7  # type: ignore[arg-type]


def test_a_learning_curve_file_without_a_summary_is_summarised(tmp_path: Path) -> None:
    path = tmp_path / "learning_curve.json"
    path.write_text(json.dumps([{"method": "tfidf", "fraction": 0.1, "n_examples": 81, "seed": 1, "keywords_f1": 0.2}]))
    curve = read_learning_curve(path)
    assert curve["summary"][0]["keywords_f1_mean"] == 0.2 and curve["summary"][0]["keywords_f1_std"] == 0.0
