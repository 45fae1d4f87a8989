"""The learning-curve experiment: the pretrained model, the same architecture from random weights, and TF-IDF,
each trained on growing shares of train and scored on the hand-written test split. Resumable: finished points
are kept in ``<work_dir>/points.jsonl``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.errors import ConfigurationError
from training.baselines import gazetteer_scores, tfidf_scores
from training.config import TrainConfig, load_config
from training.data import load_reports, load_taxonomy
from training.run_dir import HeadlineMetrics, RunDir
from training.train import label_sets_from, stratified_subset, train

logger = logging.getLogger(__name__)

METHODS = ("pretrained", "random_init", "tfidf")
# A model trained from random weights needs a higher learning rate and no layer-wise decay to learn at all;
# giving it the pretrained model's settings would make the comparison unfair to it.
RANDOM_INIT_OVERRIDES = (
    "random_init=true",
    "learning_rate=5e-4",
    "layer_lr_decay=1.0",
    "freeze_word_embeddings=false",
)


def _point_key(method: str, fraction: float, seed: int) -> str:
    return f"{method}-{fraction:g}-{seed}"


def _neural_point(config: TrainConfig) -> dict[str, Any]:
    result = train(config)
    evaluation = RunDir(result.run_dir).require_evaluation()
    return {
        **evaluation.headline("test").as_record(),
        "training_seconds": evaluation.training_seconds,
        "best_epoch": result.best_epoch,
    }


def _tfidf_point(config: TrainConfig) -> dict[str, Any]:
    taxonomy = load_taxonomy(config.taxonomy_file)
    train_reports = stratified_subset(load_reports(config.train_file, taxonomy), config.train_fraction, config.seed)
    if config.test_file is None:
        raise ConfigurationError("the learning curve scores every point on the test split: set test_file")
    test_reports = load_reports(config.test_file, taxonomy)
    scores = tfidf_scores(train_reports, test_reports, label_sets_from(taxonomy))
    scores["keywords"] = gazetteer_scores(train_reports, test_reports)["keywords"]
    return HeadlineMetrics.of_scores(scores).as_record()


def learning_curve(
    *,
    out_dir: Path,
    work_dir: Path,
    fractions: Sequence[float],
    seeds: Sequence[int],
    methods: Sequence[str],
    config_path: Path | None = None,
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run every missing (method, fraction, seed) point, then write ``learning_curve.json`` and the plot."""
    from training.plots import plot_learning_curves

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ConfigurationError(f"unknown methods: {', '.join(sorted(unknown))} (choose from {', '.join(METHODS)})")
    work_dir.mkdir(parents=True, exist_ok=True)
    points_path = work_dir / "points.jsonl"
    points = [json.loads(line) for line in points_path.read_text().splitlines()] if points_path.exists() else []
    done = {_point_key(p["method"], p["fraction"], p["seed"]) for p in points}
    for method in methods:
        for fraction in fractions:
            for seed in seeds:
                key = _point_key(method, fraction, seed)
                if key in done:
                    continue
                extra = RANDOM_INIT_OVERRIDES if method == "random_init" else ()
                config = load_config(
                    config_path,
                    [
                        *overrides,
                        *extra,
                        f"train_fraction={fraction}",
                        f"seed={seed}",
                        f"output_dir={work_dir / key}",
                        "run_baselines=false",
                    ],
                )
                logger.info("learning curve point %s", key)
                scores = _tfidf_point(config) if method == "tfidf" else _neural_point(config)
                taxonomy = load_taxonomy(config.taxonomy_file)
                n = len(stratified_subset(load_reports(config.train_file, taxonomy), fraction, seed))
                point = {"method": method, "fraction": fraction, "n_examples": n, "seed": seed, **scores}
                points.append(point)
                with points_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(point) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learning_curve.json").write_text(json.dumps(points, indent=2) + "\n", encoding="utf-8")
    plot_learning_curves(points, HeadlineMetrics.names(), out_dir / "learning_curve.png")
    return points
