"""Metric functions (plain numpy, tested against hand-computed values)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from app.inference.tensors import softmax


def confusion_matrix(true: Sequence[int], pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(true, pred, strict=True):
        matrix[t, p] += 1
    return matrix


def per_class_scores(matrix: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    scores = []
    for k in range(matrix.shape[0]):
        tp = float(matrix[k, k])
        predicted = float(matrix[:, k].sum())
        actual = float(matrix[k, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append({"precision": precision, "recall": recall, "f1": f1, "support": int(actual)})
    return scores


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the true labels or the predictions."""
    present = [k for k in range(matrix.shape[0]) if matrix[k, :].sum() or matrix[:, k].sum()]
    scores = per_class_scores(matrix)
    return float(np.mean([scores[k]["f1"] for k in present])) if present else 0.0


def accuracy(true: Sequence[int], pred: Sequence[int]) -> float:
    return float(np.mean(np.asarray(true) == np.asarray(pred))) if len(true) else 0.0


def mean_absolute_error(true: Sequence[int], pred: Sequence[int]) -> float:
    return float(np.mean(np.abs(np.asarray(true) - np.asarray(pred)))) if len(true) else 0.0


def quadratic_weighted_kappa(true: Sequence[int], pred: Sequence[int], n_classes: int) -> float:
    """Cohen's kappa with quadratic weights: 1 is perfect agreement, 0 is chance."""
    observed = confusion_matrix(true, pred, n_classes).astype(float)
    total = observed.sum()
    if total == 0:
        return 0.0
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    grid = np.arange(n_classes)
    weights = (grid[:, None] - grid[None, :]) ** 2 / max(1, (n_classes - 1) ** 2)
    denominator = (weights * expected).sum()
    return float(1 - (weights * observed).sum() / denominator) if denominator else 1.0


def span_scores(
    true: Iterable[set[tuple[int, int, str]]], pred: Iterable[set[tuple[int, int, str]]]
) -> dict[str, float]:
    """Exact-match span precision, recall and F1 (start, end and type must all agree), micro-averaged."""
    tp = n_true = n_pred = 0
    for gold, guess in zip(true, pred, strict=True):
        tp += len(gold & guess)
        n_true += len(gold)
        n_pred += len(guess)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": n_true}


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width confidence bins: count, mean confidence and accuracy of each."""
    edges = np.linspace(0, 1, n_bins + 1)
    bins = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        count = int(inside.sum())
        bins.append(
            {
                "low": float(low),
                "high": float(high),
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return bins


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of the examples."""
    total = len(confidence)
    if not total:
        return 0.0
    error = 0.0
    for b in reliability_bins(confidence, correct, n_bins):
        if b["count"]:
            error += b["count"] / total * abs(b["accuracy"] - b["confidence"])
    return float(error)


def negative_log_likelihood(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    probabilities = softmax(logits, temperature)
    picked = probabilities[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood (a log-spaced search, then a finer one)."""
    if not len(targets):
        return 1.0
    grid = [float(t) for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))]
    best = min(grid, key=lambda t: negative_log_likelihood(logits, targets, t))
    fine = [best * float(f) for f in np.exp(np.linspace(-0.05, 0.05, 41))]
    chosen: float = min(fine, key=lambda t: negative_log_likelihood(logits, targets, t))
    return round(chosen, 4)
