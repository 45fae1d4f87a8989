"""Confidence bands: thresholds chosen on dev (hand-computed cases), and the export's bands recomputed from the
artifact's own dev outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.artifact import ConfidenceBands, read_manifest
from app.inference.tensors import softmax
from tests.conftest import FIXTURES, TAXONOMY
from training.confidence import band_report, choose_bands, lowest_threshold
from training.data import load_reports, load_taxonomy
from training.evaluate import artifact_outputs
from training.model import manifest_label_sets

# 20 reports, best score first: 5 right (high), then 1 wrong and 9 right (medium: 9/10 = 0.9), then 5 wrong.
SCORES = np.linspace(0.99, 0.40, 20)
CORRECT = np.array([1] * 5 + [0] + [1] * 9 + [0] * 5, dtype=bool)


def test_high_takes_the_most_coverage_at_its_precision_and_medium_the_band_below() -> None:
    bands = choose_bands(SCORES, CORRECT)
    assert bands.high == pytest.approx(SCORES[4])
    assert bands.medium == pytest.approx(SCORES[14])
    report = band_report(SCORES, CORRECT, bands)
    assert report["high"] == {"n": 5, "coverage": 0.25, "precision": 1.0}
    assert report["medium"]["n"] == 10 and report["medium"]["precision"] == pytest.approx(0.9)
    assert report["low"] == {"n": 5, "coverage": 0.25, "precision": 0.0}
    # a stricter medium target leaves the medium band empty
    assert choose_bands(SCORES, CORRECT, medium_precision=0.95).medium is None


def test_a_threshold_takes_every_report_with_its_score() -> None:
    # two reports share the top score and one of them is wrong: no threshold reaches 97%
    scores = np.array([0.9, 0.9, 0.5])
    assert lowest_threshold(scores, np.array([True, False, True]), 0.97, below=None) is None
    assert lowest_threshold(scores, np.array([True, True, False]), 0.97, below=None) == pytest.approx(0.9)


def test_bands_of_the_contract() -> None:
    bands = ConfidenceBands(high=0.9, medium=0.6)
    assert [bands.band(s) for s in (0.95, 0.9, 0.7, 0.6, 0.1)] == ["high", "high", "medium", "medium", "low"]
    assert bands.lowest_score("medium") == 0.6 and bands.lowest_score("high") == 0.9
    empty_medium = ConfidenceBands(high=0.9, medium=None)
    assert empty_medium.band(0.7) == "low" and empty_medium.lowest_score("medium") == 0.9
    assert ConfidenceBands(high=None, medium=None).lowest_score("medium") is None
    with pytest.raises(ValueError, match="medium threshold"):
        ConfidenceBands(high=0.5, medium=0.8)


def test_export_chooses_bands_on_dev_with_the_graph_as_shipped(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    reports = load_reports(FIXTURES / "dev.jsonl", load_taxonomy(TAXONOMY))
    labels = manifest_label_sets(manifest)
    logits = artifact_outputs(tiny_artifact, manifest, reports).logits["department"]
    probabilities = softmax(logits, manifest.tasks["department"].temperature)
    truth = np.array([labels.department.index(r.department) for r in reports])
    correct = probabilities.argmax(-1) == truth
    expected = choose_bands(probabilities.max(-1), correct)
    assert manifest.confidence_bands is not None
    assert manifest.confidence_bands.high == pytest.approx(expected.high)
    assert manifest.confidence_bands.medium == pytest.approx(expected.medium)
    recorded = manifest.metrics["confidence_bands"]
    assert set(recorded) == {"dev", "test"}  # the tiny config's test file is the dev file
    assert recorded["dev"] == band_report(probabilities.max(-1), correct, manifest.confidence_bands)
    assert sum(band["n"] for band in recorded["dev"].values()) == len(reports)
    assert "## Confidence bands" in (tiny_artifact / "MODEL_CARD.md").read_text(encoding="utf-8")
