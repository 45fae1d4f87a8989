"""Metric functions against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics as m


def test_confusion_matrix_and_per_class_scores() -> None:
    true = [0, 0, 1, 1, 2]
    pred = [0, 1, 1, 1, 0]
    matrix = m.confusion_matrix(true, pred, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    scores = m.per_class_scores(matrix)
    # class 0: tp 1, predicted 2, actual 2 -> P 0.5, R 0.5; class 1: tp 2, predicted 3, actual 2 -> P 2/3, R 1
    assert scores[0]["precision"] == pytest.approx(0.5) and scores[0]["recall"] == pytest.approx(0.5)
    assert scores[1]["precision"] == pytest.approx(2 / 3) and scores[1]["recall"] == pytest.approx(1.0)
    assert scores[1]["f1"] == pytest.approx(0.8)
    assert scores[2] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m.macro_f1(matrix) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m.accuracy(true, pred) == pytest.approx(0.6)


def test_macro_f1_ignores_classes_absent_from_truth_and_predictions() -> None:
    matrix = m.confusion_matrix([0, 1], [0, 1], 4)
    assert m.macro_f1(matrix) == pytest.approx(1.0)


def test_quadratic_weighted_kappa_hand_computed() -> None:
    assert m.quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3], 4) == pytest.approx(1.0)
    # true [0, 0, 1, 1], pred [0, 1, 1, 1], 2 classes: weights [[0,1],[1,0]];
    # observed off-diagonal: 1 (true 0 pred 1); expected = outer([2,2],[1,3])/4 -> off-diagonal 1.5 + 0.5 = 2
    assert m.quadratic_weighted_kappa([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx(1 - 1 / 2)
    # always predicting one class agrees no better than chance
    assert m.quadratic_weighted_kappa([0, 1, 2, 3], [1, 1, 1, 1], 4) == pytest.approx(0.0)


def test_mean_absolute_error() -> None:
    assert m.mean_absolute_error([0, 1, 3], [1, 1, 1]) == pytest.approx(1.0)


def test_span_scores_need_exact_start_end_and_type() -> None:
    gold = [{(0, 5, "PLATS"), (10, 15, "OBJEKT")}, {(3, 7, "PLATS")}]
    pred = [{(0, 5, "PLATS"), (10, 14, "OBJEKT")}, {(3, 7, "OBJEKT")}]
    scores = m.span_scores(gold, pred)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(1 / 3)
    assert scores["support"] == 3


def test_expected_calibration_error_hand_computed() -> None:
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    # bin (0.9, 1]: accuracy 0.5, confidence 0.95 -> 0.45 * 2/4; bin (0.5, 0.6]: accuracy 1, conf 0.55 -> 0.45 * 2/4
    assert m.expected_calibration_error(confidence, correct) == pytest.approx(0.45)


def test_fit_temperature_softens_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, size=300)
    logits = np.eye(3)[targets] * 10.0
    flip = rng.random(300) < 0.3  # 30% of the confident answers are wrong
    logits[flip] = np.roll(logits[flip], 1, axis=1)
    temperature = m.fit_temperature(logits, targets)
    assert temperature > 2.0
    assert m.negative_log_likelihood(logits, targets, temperature) < m.negative_log_likelihood(logits, targets, 1.0)
