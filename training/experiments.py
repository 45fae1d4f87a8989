"""The learning-curve experiment: how many labelled reports each way of learning needs.

Methods, each trained on growing stratified shares of train and scored on the hand-written test split:

- ``pretrained``: the default recipe (fine-tuning, description heads, the small-data schedule) with the rest of train
  as unlabelled reports (consistency training);
- ``feature_extraction``: the same with the encoder frozen (only the heads learn);
- ``random_init``: the same architecture from random weights, linear heads, no unlabelled reports (the no-transfer
  control);
- ``tfidf``: TF-IDF + logistic regression (keywords: the gazetteer);
- ``zero_shot``: no labelled report at all (share 0): the description heads alone.

Several seeds per point up to ``all_seeds_up_to`` (a seed draws the subset and the initialisation), one above.
Resumable: finished points are kept in ``<work_dir>/points.jsonl``; the result is ``learning_curve.json`` with one
row per point and the mean and standard deviation per (method, share), and the plot with error bars.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.errors import ConfigurationError
from training.baselines import gazetteer_scores, tfidf_scores
from training.config import TrainConfig, load_config
from training.curve_summary import summarise
from training.data import Report, load_reports, load_taxonomy
from training.run_dir import HeadlineMetrics, RunDir
from training.train import label_sets_from, stratified_subset, train

logger = logging.getLogger(__name__)

METHODS = ("pretrained", "feature_extraction", "random_init", "tfidf", "zero_shot")
ZERO_SHOT = "zero_shot"
# A model trained from random weights needs a higher learning rate and no layer-wise decay to learn at all;
# giving it the pretrained model's settings would make the comparison unfair to it. Description heads and
# consistency training build on what a pretrained encoder knows, so the control goes without them.
RANDOM_INIT_OVERRIDES = (
    "random_init=true",
    "learning_rate=5e-4",
    "layer_lr_decay=1.0",
    "freeze_word_embeddings=false",
    "head_init=random",
    "consistency_weight=0",
)
METHOD_OVERRIDES: dict[str, tuple[str, ...]] = {
    "pretrained": ("unlabelled_from_train=true",),
    "feature_extraction": ("strategy=feature_extraction", "unlabelled_from_train=true"),
    "random_init": RANDOM_INIT_OVERRIDES,
    ZERO_SHOT: ("unlabelled_from_train=true",),
}


def _point_key(method: str, fraction: float, seed: int) -> str:
    return f"{method}-{fraction:g}-{seed}"


def _neural_point(config: TrainConfig) -> dict[str, Any]:
    result = train(config)
    run = RunDir(result.run_dir)
    evaluation = run.require_evaluation()
    return {
        **evaluation.headline("test").as_record(),
        "training_seconds": evaluation.training_seconds,
        "best_epoch": result.best_epoch,
        "precision": run.config().precision,  # what ran: precision=auto depends on the machine
    }


def _train_reports(config: TrainConfig) -> list[Report]:
    if config.train_file is None:
        return []
    taxonomy = load_taxonomy(config.taxonomy_file)
    return stratified_subset(load_reports(config.train_file, taxonomy), config.train_fraction, config.seed)


def _tfidf_point(config: TrainConfig) -> dict[str, Any]:
    taxonomy = load_taxonomy(config.taxonomy_file)
    train_reports = _train_reports(config)
    if config.test_file is None:
        raise ConfigurationError("the learning curve scores every point on the test split: set test_file")
    test_reports = load_reports(config.test_file, taxonomy)
    scores = tfidf_scores(train_reports, test_reports, label_sets_from(taxonomy))
    scores["keywords"] = gazetteer_scores(train_reports, test_reports)["keywords"]
    return HeadlineMetrics.of_scores(scores).as_record()


def curve_points(
    methods: Sequence[str], fractions: Sequence[float], seeds: Sequence[int], all_seeds_up_to: float
) -> list[tuple[str, float, int]]:
    """Every (method, share, seed) to run: zero-shot only at share 0 and the others only above it; every seed up
    to ``all_seeds_up_to``, the first one above; zero-shot with the first seed only (it has no random choice:
    the unlabelled rest of train is all of train)."""
    points = []  # share by share, so that an interrupted run has compared every method on the smallest shares
    for fraction in sorted(fractions):
        for method in methods:
            if (method == ZERO_SHOT) != (fraction == 0):
                continue
            chosen = seeds if 0 < fraction <= all_seeds_up_to else seeds[:1]
            points += [(method, fraction, seed) for seed in chosen]
    return points


def learning_curve(
    *,
    out_dir: Path,
    work_dir: Path,
    fractions: Sequence[float],
    seeds: Sequence[int],
    methods: Sequence[str],
    all_seeds_up_to: float = 0.25,
    config_path: Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every missing (method, share, seed) point, then write ``learning_curve.json`` and the plot."""
    from training.plots import plot_learning_curves

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ConfigurationError(f"unknown methods: {', '.join(sorted(unknown))} (choose from {', '.join(METHODS)})")
    work_dir.mkdir(parents=True, exist_ok=True)
    points_path = work_dir / "points.jsonl"
    rows = [json.loads(line) for line in points_path.read_text().splitlines()] if points_path.exists() else []
    done = {_point_key(p["method"], p["fraction"], p["seed"]) for p in rows}
    for method, fraction, seed in curve_points(methods, fractions, seeds, all_seeds_up_to):
        key = _point_key(method, fraction, seed)
        if key in done:
            continue
        config = load_config(
            config_path,
            [
                *overrides,
                *METHOD_OVERRIDES.get(method, ()),
                f"train_fraction={fraction}",
                f"seed={seed}",
                f"output_dir={work_dir / key}",
                "run_baselines=false",
            ],
        )
        logger.info("learning curve point %s", key)
        scores = _tfidf_point(config) if method == "tfidf" else _neural_point(config)
        point = {"method": method, "fraction": fraction, "n_examples": len(_train_reports(config)), "seed": seed}
        rows.append(point | scores)
        with points_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(point | scores) + "\n")
    result = {"rows": rows, "summary": summarise(rows)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learning_curve.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_learning_curves(result["summary"], HeadlineMetrics.names(), out_dir / "learning_curve.png")
    return result
