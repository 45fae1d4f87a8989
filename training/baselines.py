"""Simple baselines, trained and reported beside the model on the same splits: majority class, TF-IDF (word and
character n-grams) + logistic regression per classification task, and a gazetteer for keywords."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline

from app.artifact import CLASSIFICATION_TASKS
from training import metrics as m
from training.data import Report
from training.model import LabelSets


def _known(reports: list[Report], task: str) -> list[Report]:
    return [r for r in reports if r.label(task) is not None]


def _scores(task: str, true: list[str], pred: list[str], labels: LabelSets) -> dict[str, float]:
    ids = labels.ids(task)
    true_i, pred_i = [ids.index(t) for t in true], [ids.index(p) for p in pred]
    if task == "severity":
        return {
            "severity_qwk": m.quadratic_weighted_kappa(true_i, pred_i, len(ids)),
            "severity_mae": m.mean_absolute_error(true_i, pred_i),
            "severity_macro_f1": m.macro_f1(m.confusion_matrix(true_i, pred_i, len(ids))),
        }
    return {task: m.macro_f1(m.confusion_matrix(true_i, pred_i, len(ids)))}


def majority_scores(train: list[Report], evaluate: list[Report], labels: LabelSets) -> dict[str, float]:
    """Always the most frequent training label."""
    scores: dict[str, float] = {}
    for task in CLASSIFICATION_TASKS:
        known_train, known_eval = _known(train, task), _known(evaluate, task)
        if not known_train or not known_eval:
            continue
        majority = Counter(r.label(task) for r in known_train).most_common(1)[0][0]
        assert majority is not None
        scores |= _scores(task, [r.label(task) or "" for r in known_eval], [majority] * len(known_eval), labels)
    return scores


def tfidf_classifier() -> Any:
    """Word 1-2-grams and character 2-5-grams (within words), sublinear TF-IDF, balanced logistic regression."""
    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True)),
        ]
    )
    return make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced"))


def tfidf_scores(train: list[Report], evaluate: list[Report], labels: LabelSets) -> dict[str, float]:
    scores: dict[str, float] = {}
    for task in CLASSIFICATION_TASKS:
        known_train, known_eval = _known(train, task), _known(evaluate, task)
        if len({r.label(task) for r in known_train}) < 2 or not known_eval:
            continue
        model = tfidf_classifier().fit([r.text for r in known_train], [r.label(task) for r in known_train])
        predictions = [str(p) for p in model.predict([r.text for r in known_eval])]
        scores |= _scores(task, [r.label(task) or "" for r in known_eval], predictions, labels)
    return scores


class Gazetteer:
    """Every keyword string seen in training, matched case-insensitively on word boundaries, longest first."""

    def __init__(self, train: list[Report]) -> None:
        entries: dict[str, Counter[str]] = {}
        for report in train:
            for span in report.keywords or []:
                entries.setdefault(report.text[span.start : span.end].casefold(), Counter())[span.type] += 1
        self.types = {surface: counts.most_common(1)[0][0] for surface, counts in entries.items()}
        alternatives = sorted(self.types, key=len, reverse=True)
        self.pattern = (
            re.compile(r"(?<!\w)(" + "|".join(re.escape(a) for a in alternatives) + r")(?!\w)", re.IGNORECASE)
            if alternatives
            else None
        )

    def find(self, text: str) -> set[tuple[int, int, str]]:
        if self.pattern is None:
            return set()
        return {(hit.start(), hit.end(), self.types[hit.group(0).casefold()]) for hit in self.pattern.finditer(text)}


def gazetteer_scores(train: list[Report], evaluate: list[Report]) -> dict[str, float]:
    gazetteer = Gazetteer(train)
    known = [r for r in evaluate if r.keywords is not None]
    gold = [{(s.start, s.end, s.type) for s in r.keywords or []} for r in known]
    return {"keywords": m.span_scores(gold, [gazetteer.find(r.text) for r in known])["f1"]}


def evaluate_baselines(
    train: list[Report], splits: dict[str, list[Report]], labels: LabelSets
) -> dict[str, dict[str, dict[str, float]]]:
    """{baseline: {split: {metric: value}}} for every baseline on every split."""
    return {
        "majority": {split: majority_scores(train, reports, labels) for split, reports in splits.items()},
        "tfidf_logreg": {split: tfidf_scores(train, reports, labels) for split, reports in splits.items()},
        "gazetteer": {split: gazetteer_scores(train, reports) for split, reports in splits.items()},
    }
