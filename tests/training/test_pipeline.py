"""The whole pipeline end to end on the tiny model: train, evaluate, export (fp32 and int8), tampering."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from app.artifact import TASKS, read_manifest


def test_training_writes_a_complete_run_directory(tiny_run: Path) -> None:
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["max_length"] == 64
    epochs = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["train_loss"] > 0 for e in epochs)
    assert (tiny_run / "checkpoint" / "model.pt").is_file()
    evaluation = json.loads((tiny_run / "evaluation" / "evaluation.json").read_text())
    assert set(evaluation["splits"]) == {"dev", "test"}
    assert set(evaluation["baselines"]) == {"majority", "tfidf_logreg", "gazetteer"}
    assert set(evaluation["temperatures"]) == {"department", "sentiment", "severity", "keywords"}
    for name in ("dev_department_confusion.png", "dev_severity_reliability.png", "evaluation.md"):
        assert (tiny_run / "evaluation" / name).stat().st_size > 0


def test_tiny_artifact_loads_through_the_contract(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    assert manifest.model_version == "tiny-test"
    assert [label.id for label in manifest.tasks["severity"].labels] == ["lag", "medel", "hog", "akut"]
    assert manifest.tasks["department"].labels[0].name == "Gata och park"
    assert set(manifest.metrics["export"]["fp32_max_abs_diff"]) == set(TASKS)
    assert manifest.tokenizer.pad_token_id == Tokenizer.from_file(str(tiny_artifact / "tokenizer.json")).token_to_id(
        "<pad>"
    )
