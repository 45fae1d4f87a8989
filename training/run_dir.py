"""The run directory as one typed object, and the headline metrics as one typed record.

A run directory (written by ``kommunrouter train``, read by evaluate, export, experiments and the benchmarks)::

    config.json            the resolved TrainConfig (data paths absolute, so a later reader needs no working dir)
    metrics.jsonl          one line per judged epoch
    taxonomy.json          the label schema the run was trained with
    base_report.json       what the base-encoder build measured (when there is one)
    checkpoint/            weights, encoder config, tokenizer, label sets (training/model.py)
    evaluation/            evaluation.json (:class:`Evaluation`), evaluation.md, plots
    distillation.json      a distilled student's teachers, KL to them and their scores (training/distill.py)

This module has no heavy imports: the benchmarks read runs without torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConfigurationError
from training.config import TrainConfig

CONFIG_FILE = "config.json"
EPOCH_METRICS_FILE = "metrics.jsonl"
TAXONOMY_FILE = "taxonomy.json"
BASE_REPORT_FILE = "base_report.json"
CHECKPOINT_DIR = "checkpoint"
EVALUATION_DIR = "evaluation"
EVALUATION_FILE = "evaluation.json"
DISTILLATION_FILE = "distillation.json"
DATA_FILES = ("train_file", "dev_file", "test_file", "taxonomy_file", "mlm_file", "unlabelled_file")


@dataclass(frozen=True)
class HeadlineMetrics:
    """The four numbers a run is judged by (early stopping watches their mean)."""

    department_macro_f1: float | None = None
    sentiment_macro_f1: float | None = None
    severity_qwk: float | None = None
    keywords_f1: float | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The record's keys, as they appear in metrics.jsonl, the learning curve and the benchmarks."""
        return tuple(item.name for item in dataclasses.fields(cls))

    @classmethod
    def of_split(cls, metrics: Mapping[str, Any]) -> HeadlineMetrics:
        """From the metrics of one split as evaluation computes them (``{task: {metric: value}}``)."""
        return cls(
            department_macro_f1=metrics["department"]["macro_f1"],
            sentiment_macro_f1=metrics["sentiment"]["macro_f1"],
            severity_qwk=metrics["severity"]["quadratic_weighted_kappa"],
            keywords_f1=metrics["keywords"]["f1"],
        )

    @classmethod
    def of_scores(cls, scores: Mapping[str, float | None]) -> HeadlineMetrics:
        """From the flat scores of the baselines and the manifest (``department``, ``severity_qwk``, ...)."""
        return cls(
            department_macro_f1=scores.get("department"),
            sentiment_macro_f1=scores.get("sentiment"),
            severity_qwk=scores.get("severity_qwk"),
            keywords_f1=scores.get("keywords"),
        )

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> HeadlineMetrics:
        """From a record in this class's own names (other keys are ignored)."""
        return cls(**{name: record.get(name) for name in cls.names()})

    def as_record(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)

    def as_scores(self) -> dict[str, float | None]:
        """In the flat names of the baselines and the manifest."""
        return {
            "department": self.department_macro_f1,
            "sentiment": self.sentiment_macro_f1,
            "severity_qwk": self.severity_qwk,
            "keywords": self.keywords_f1,
        }

    def mean(self) -> float:
        """The mean of the numbers that are known (the dev score early stopping watches)."""
        known = [value for value in self.as_record().values() if value is not None]
        return float(sum(known) / len(known)) if known else math.nan


@dataclass
class Evaluation:
    """``evaluation.json``: every metric of every split, the fitted temperatures and the baselines."""

    splits: dict[str, dict[str, Any]]
    temperatures: dict[str, float] | None = None
    baselines: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # {baseline: {split: scores}}
    training_seconds: float | None = None
    labelled_reports: int | None = None  # what the run trained on (0: zero-shot, no training step)
    unlabelled_reports: int | None = None
    model: str | None = None
    data: str | None = None

    def headline(self, split: str) -> HeadlineMetrics:
        return HeadlineMetrics.of_split(self.splits[split])

    def to_json(self) -> dict[str, Any]:
        values = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
        if not self.baselines:
            values.pop("baselines")
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Evaluation:
        names = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    @classmethod
    def read(cls, path: Path) -> Evaluation:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, default=float), encoding="utf-8")


@dataclass(frozen=True)
class RunDir:
    """A training run's directory and what it holds."""

    path: Path

    @classmethod
    def containing(cls, path: Path) -> RunDir:
        """The run of a run directory, or of its checkpoint directory."""
        if path.name == CHECKPOINT_DIR and not (path / CHECKPOINT_DIR).is_dir():
            return cls(path.parent)
        return cls(path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def epoch_metrics_path(self) -> Path:
        return self.path / EPOCH_METRICS_FILE

    @property
    def taxonomy_path(self) -> Path:
        return self.path / TAXONOMY_FILE

    @property
    def base_report_path(self) -> Path:
        return self.path / BASE_REPORT_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def evaluation_dir(self) -> Path:
        return self.path / EVALUATION_DIR

    @property
    def evaluation_path(self) -> Path:
        return self.evaluation_dir / EVALUATION_FILE

    @property
    def distillation_path(self) -> Path:
        return self.path / DISTILLATION_FILE

    def distillation(self) -> dict[str, Any] | None:
        """A distilled student's record (teachers, weights, KL, scores), or None for a run trained on labels."""
        path = self.distillation_path
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def write_config(self, config: TrainConfig) -> None:
        """``config.json`` with the data paths made absolute: the run can be read from any working directory."""
        values = config.to_json()
        for name in DATA_FILES:
            if values.get(name) is not None:
                values[name] = str(Path(values[name]).resolve())
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(values, indent=2), encoding="utf-8")

    def config(self) -> TrainConfig:
        """The run's configuration (ConfigurationError when the run has none)."""
        if not self.has_config():
            raise ConfigurationError(f"{self.path} is not a training run: {CONFIG_FILE} is missing")
        return TrainConfig.from_json(json.loads(self.config_path.read_text(encoding="utf-8")))

    def config_or_default(self) -> TrainConfig:
        """The run's configuration, or the defaults for a bare checkpoint directory."""
        return self.config() if self.has_config() else TrainConfig()

    def base_report(self) -> dict[str, Any] | None:
        path = self.base_report_path
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def evaluation(self) -> Evaluation | None:
        """The run's evaluation, or None before it was evaluated."""
        return Evaluation.read(self.evaluation_path) if self.evaluation_path.is_file() else None

    def require_evaluation(self) -> Evaluation:
        evaluation = self.evaluation()
        if evaluation is None:
            raise ConfigurationError(f"{self.path} has no evaluation: {self.evaluation_path} is missing")
        return evaluation

    def append_epoch(self, record: Mapping[str, Any]) -> None:
        with self.epoch_metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def epochs(self) -> list[dict[str, Any]]:
        path = self.epoch_metrics_path
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
