"""Confidence bands for auto-routing: department-score thresholds chosen on dev, and their precision and coverage.

``high`` gets the lowest threshold whose reports (score >= it) are routed right at >= 97% on dev, which is the
most coverage at that precision; ``medium`` the lowest threshold below it whose band alone (medium <= score <
high) is right at >= 90%; the rest is ``low``. The band a score falls in is the contract's
(:meth:`app.artifact.ConfidenceBands.band`), so the service and these reports cannot disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.artifact import CONFIDENCE_BANDS, ConfidenceBands

HIGH_PRECISION = 0.97
MEDIUM_PRECISION = 0.90


def lowest_threshold(scores: np.ndarray, correct: np.ndarray, precision: float, *, below: float | None) -> float | None:
    """The lowest score ``t`` such that the reports with ``t <= score`` (and ``score < below``) are right at least
    ``precision`` of the time; None when no such ``t`` exists."""
    inside = np.ones(len(scores), dtype=bool) if below is None else scores < below
    order = np.argsort(-scores[inside], kind="stable")
    ranked_scores, ranked_correct = scores[inside][order], correct[inside][order].astype(np.float64)
    running = np.cumsum(ranked_correct) / np.arange(1, len(ranked_correct) + 1)
    best = None
    for i, threshold in enumerate(ranked_scores):
        # ties: a threshold takes every report with its score, so only the last of a run of equal scores counts
        if i + 1 < len(ranked_scores) and ranked_scores[i + 1] == threshold:
            continue
        if running[i] >= precision:
            best = float(threshold)
    return best


def choose_bands(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    high_precision: float = HIGH_PRECISION,
    medium_precision: float = MEDIUM_PRECISION,
) -> ConfidenceBands:
    """Band thresholds from (dev) department scores and whether each top department was right."""
    high = lowest_threshold(scores, correct, high_precision, below=None)
    medium = lowest_threshold(scores, correct, medium_precision, below=high)
    return ConfidenceBands(
        high=high, medium=medium, target_precision={"high": high_precision, "medium": medium_precision}
    )


def band_report(scores: np.ndarray, correct: np.ndarray, bands: ConfidenceBands) -> dict[str, dict[str, Any]]:
    """Per band: reports, coverage (share of all reports) and department precision (None for an empty band)."""
    assigned = np.asarray([bands.band(float(score)) for score in scores])
    report: dict[str, dict[str, Any]] = {}
    for band in CONFIDENCE_BANDS:
        inside = assigned == band
        count = int(inside.sum())
        report[band] = {
            "n": count,
            "coverage": count / len(scores) if len(scores) else 0.0,
            "precision": float(correct[inside].mean()) if count else None,
        }
    return report
