"""An ensemble of trained models: averaged temperature-calibrated probabilities for the classification tasks and
averaged tag probabilities for keyword spans, with members and weights chosen on dev only.

A member is a training run directory, or ``tfidf``: TF-IDF + logistic regression (the baseline's classifier)
trained on the training split, a classical member that errs differently from the transformers (it has no keyword
tagger, so keyword spans average the runs alone). Every run member must share the tokenizer, so that keyword tag
probabilities of the same token can be averaged.

Weights are chosen per task on dev: a grid over the simplex in steps of 0.1 (a weight of 0 leaves a member out)
maximising the task's dev score (macro-F1; QWK for severity; span F1 for keywords), ties broken by the lower dev
negative log-likelihood. The averaged probabilities then get their own temperature, fitted on dev.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from tokenizers import Tokenizer

from app.artifact import CLASSIFICATION_TASKS, SPAN_TASK, TASKS
from app.errors import ConfigurationError
from app.inference.tensors import softmax
from training import metrics as m
from training.data import Report
from training.evaluate import ModelOutputs, collect_outputs, evaluate_outputs, predicted_spans
from training.markdown import markdown_row
from training.model import Encoded, LabelSets, encode_texts, load_checkpoint, pad_token_id, torch_runner
from training.run_dir import HeadlineMetrics, RunDir

logger = logging.getLogger(__name__)

TFIDF_MEMBER = "tfidf"
WEIGHT_STEP = 0.1
TFIDF_FOLDS = 5
# Probabilities are floored before their logarithm: a member sure of a wrong label must not veto the others.
PROBABILITY_FLOOR = 1e-6
WeightMode = Literal["dev", "equal"]
ENSEMBLE_FILE = "ensemble.json"


@dataclass
class EnsembleInputs:
    """Texts as the members read them: the text, the shared tokenizer's ids, and for each text the id of the
    training report it is (or was made from), so a classical member never judges a text it was fitted on."""

    texts: list[str]
    encoded: Encoded
    sources: list[str | None]

    @classmethod
    def of_reports(
        cls, reports: Sequence[Report], tokenizer: Tokenizer, max_length: int, text_prefix: str
    ) -> EnsembleInputs:
        texts = [r.text for r in reports]
        return cls(texts, encode_texts(tokenizer, texts, max_length, text_prefix=text_prefix), [None] * len(texts))

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class MemberOutputs:
    """A member's raw scores: logits per classification task ([n, labels]) and keyword tag logits per text
    ([tokens, tags]; None for a member without a keyword tagger)."""

    logits: dict[str, np.ndarray]
    keyword_logits: list[np.ndarray] | None


class Member(Protocol):
    """A model the ensemble averages."""

    name: str

    @property
    def has_tagger(self) -> bool: ...

    def outputs(self, inputs: EnsembleInputs) -> MemberOutputs: ...


class RunMember:
    """A training run's best checkpoint, in PyTorch."""

    def __init__(self, run_dir: Path, *, batch_size: int = 32) -> None:
        self.name = str(run_dir)
        self.run = RunDir.containing(run_dir)
        self.model, self.tokenizer, self.labels = load_checkpoint(run_dir)
        self.max_length = self.run.config_or_default().max_length
        self.text_prefix = self.run.config_or_default().text_prefix
        self.batch_size = batch_size

    @property
    def has_tagger(self) -> bool:
        return True

    def outputs(self, inputs: EnsembleInputs) -> MemberOutputs:
        outputs = collect_outputs(
            torch_runner(self.model),
            inputs.encoded,
            self.batch_size,
            pad_token_id(self.tokenizer),
            progress=f"{self.run.name}: {len(inputs)} texts",
        )
        return MemberOutputs(outputs.logits, outputs.keyword_logits)


class TfidfMember:
    """TF-IDF + logistic regression per classification task, fitted on the training reports. A text that is a
    training report, or was made from one, gets the prediction of a model fitted without it (cross-fitting), so
    its probabilities are as honest as on new text."""

    def __init__(self, train_reports: Sequence[Report], labels: LabelSets, *, folds: int = TFIDF_FOLDS) -> None:
        self.name = TFIDF_MEMBER
        self.labels = labels
        self.train_reports = list(train_reports)
        self.folds = folds
        self.fold_of = {r.id: i % folds for i, r in enumerate(sorted(self.train_reports, key=lambda r: r.id))}
        self._models: dict[tuple[str, int | None], Any] = {}

    @property
    def has_tagger(self) -> bool:
        return False

    def _model(self, task: str, fold: int | None) -> Any:
        """The classifier of a task fitted on every training report (fold None) or on all but one fold."""
        from training.baselines import tfidf_classifier

        key = (task, fold)
        if key not in self._models:
            known = [
                r
                for r in self.train_reports
                if r.label(task) is not None and (fold is None or self.fold_of[r.id] != fold)
            ]
            if len({r.label(task) for r in known}) < 2:  # a tiny training set can leave a fold one label
                return self._model(task, None)
            self._models[key] = tfidf_classifier().fit([r.text for r in known], [r.label(task) for r in known])
        return self._models[key]

    def tasks(self) -> list[str]:
        """The classification tasks with at least two labels in training (a classifier needs two)."""
        return [t for t in CLASSIFICATION_TASKS if len({r.label(t) for r in self.train_reports} - {None}) >= 2]

    def _probabilities(self, task: str, texts: list[str], fold: int | None) -> np.ndarray:
        model = self._model(task, fold)
        ids = self.labels.ids(task)
        probabilities = np.full((len(texts), len(ids)), PROBABILITY_FLOOR)
        predicted = model.predict_proba(texts)
        for column, label in enumerate(model.classes_):
            probabilities[:, ids.index(label)] = predicted[:, column]
        return probabilities

    def outputs(self, inputs: EnsembleInputs) -> MemberOutputs:
        groups: dict[int | None, list[int]] = {}
        for i, source in enumerate(inputs.sources):
            groups.setdefault(self.fold_of.get(source or ""), []).append(i)
        logits = {}
        for task in self.tasks():
            probabilities = np.zeros((len(inputs), len(self.labels.ids(task))))
            for fold, indices in groups.items():
                probabilities[indices] = self._probabilities(task, [inputs.texts[i] for i in indices], fold)
            logits[task] = np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0)).astype(np.float32)
        return MemberOutputs(logits, None)


def load_members(specs: Sequence[str | Path], train_reports: Sequence[Report]) -> list[Member]:
    """Members from run directories and ``tfidf``; at least one run, all runs with one tokenizer and label set."""
    runs = [RunMember(Path(spec)) for spec in specs if str(spec) != TFIDF_MEMBER]
    if not runs:
        raise ConfigurationError("an ensemble needs at least one training run besides tfidf")
    first = runs[0]
    for run in runs[1:]:
        if run.labels != first.labels:
            raise ConfigurationError(f"{run.name} predicts other labels than {first.name}")
        if run.tokenizer.get_vocab() != first.tokenizer.get_vocab():
            raise ConfigurationError(
                f"{run.name} has another tokenizer than {first.name}: keyword tags cannot be averaged"
            )
    members: list[Member] = []
    by_name = {run.name: run for run in runs}
    for spec in specs:
        members.append(TfidfMember(train_reports, first.labels) if str(spec) == TFIDF_MEMBER else by_name[str(spec)])
    return members


def _simplex(size: int, step: float) -> list[np.ndarray]:
    """Every weight vector of ``size`` non-negative multiples of ``step`` summing to 1."""
    units = round(1 / step)
    return [
        np.asarray(parts, dtype=np.float64) / units
        for parts in itertools.product(range(units + 1), repeat=size)
        if sum(parts) == units
    ]


def _task_score(task: str, truth_array: np.ndarray, predicted_array: np.ndarray, labels: LabelSets) -> float:
    size = len(labels.ids(task))
    truth, predicted = [int(i) for i in truth_array], [int(i) for i in predicted_array]
    if task == "severity":
        return m.quadratic_weighted_kappa(truth, predicted, size)
    return m.macro_f1(m.confusion_matrix(truth, predicted, size))


def _average(probabilities: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum((w * p for w, p in zip(weights, probabilities, strict=True)), np.zeros_like(probabilities[0]))


@dataclass
class Ensemble:
    """Members, their temperatures fitted on dev, the weights chosen on dev per task (one per member, 0 for a
    member without the task) and the temperatures of the averaged probabilities."""

    members: list[Member]
    labels: LabelSets
    member_temperatures: list[dict[str, float]]
    weights: dict[str, list[float]] = field(default_factory=dict)
    temperatures: dict[str, float] = field(default_factory=dict)

    def _calibrated(self, outputs: Sequence[MemberOutputs], task: str) -> list[np.ndarray]:
        """Each member's temperature-scaled probabilities of a task (zeros for a member without it)."""
        size = len(self.labels.ids(task))
        return [
            softmax(out.logits[task], temps[task]) if task in out.logits else np.zeros((_text_count(outputs), size))
            for out, temps in zip(outputs, self.member_temperatures, strict=True)
        ]

    def _tag_probabilities(self, outputs: Sequence[MemberOutputs]) -> list[list[np.ndarray] | None]:
        return [
            None if out.keyword_logits is None else [softmax(logits) for logits in out.keyword_logits]
            for out in outputs
        ]

    def combine(self, outputs: Sequence[MemberOutputs], inputs: EnsembleInputs) -> ModelOutputs:
        """The ensemble's outputs: log of the weighted average probabilities (softmax of them gives the average
        back), before the ensemble's own temperature."""
        logits = {
            task: _log(_average(self._calibrated(outputs, task), np.asarray(self.weights[task])))
            for task in CLASSIFICATION_TASKS
        }
        return ModelOutputs(
            logits,
            self._combined_tags(outputs, self.weights[SPAN_TASK]),
            inputs.encoded.offsets,
            inputs.encoded.special,
        )

    def _combined_tags(self, outputs: Sequence[MemberOutputs], weights: Sequence[float]) -> list[np.ndarray]:
        tags = self._tag_probabilities(outputs)
        combined = []
        for i in range(_text_count(outputs)):
            total = sum(w * member[i] for w, member in zip(weights, tags, strict=True) if member is not None and w)
            combined.append(_log(np.asarray(total)))
        return combined

    def outputs(self, inputs: EnsembleInputs) -> tuple[ModelOutputs, list[MemberOutputs]]:
        """The ensemble's outputs on texts, and each member's."""
        members = [member.outputs(inputs) for member in self.members]
        return self.combine(members, inputs), members

    def probabilities(self, outputs: ModelOutputs) -> dict[str, np.ndarray]:
        """Calibrated probabilities of the classification tasks (the ensemble's temperatures applied)."""
        return {task: softmax(outputs.logits[task], self.temperatures[task]) for task in CLASSIFICATION_TASKS}

    def describe(self) -> list[dict[str, Any]]:
        """Each member's name, temperatures and weights (for reports)."""
        return [
            {
                "member": member.name,
                "temperatures": temps,
                "weights": {task: self.weights[task][i] for task in TASKS},
            }
            for i, (member, temps) in enumerate(zip(self.members, self.member_temperatures, strict=True))
        ]


def _text_count(outputs: Sequence[MemberOutputs]) -> int:
    """How many texts the outputs are of (every member has logits of some classification task)."""
    return len(next(iter(outputs[0].logits.values())))


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probabilities, PROBABILITY_FLOOR, None)).astype(np.float32)


def _truth(reports: Sequence[Report], task: str, labels: LabelSets) -> tuple[list[int], np.ndarray]:
    known = [i for i, r in enumerate(reports) if r.label(task) is not None]
    ids = labels.ids(task)
    return known, np.asarray([ids.index(reports[i].label(task) or "") for i in known], dtype=np.int64)


def fit_member_temperatures(
    reports: Sequence[Report], outputs: Sequence[MemberOutputs], labels: LabelSets
) -> list[dict[str, float]]:
    temperatures = []
    for out in outputs:
        fitted = {}
        for task in CLASSIFICATION_TASKS:
            known, truth = _truth(reports, task, labels)
            fitted[task] = m.fit_temperature(out.logits[task][known], truth) if task in out.logits else 1.0
        temperatures.append(fitted | {SPAN_TASK: 1.0})
    return temperatures


def _choose_class_weights(
    ensemble: Ensemble, reports: Sequence[Report], outputs: Sequence[MemberOutputs], task: str, mode: WeightMode
) -> list[float]:
    able = [i for i, out in enumerate(outputs) if task in out.logits]
    known, truth = _truth(reports, task, ensemble.labels)
    calibrated = [p[known] for p in ensemble._calibrated(outputs, task)]
    candidates = [np.ones(len(able)) / len(able)] if mode == "equal" else _simplex(len(able), WEIGHT_STEP)
    best: tuple[float, float] | None = None
    chosen = candidates[0]
    for partial in candidates:
        weights = np.zeros(len(outputs))
        weights[able] = partial
        average = _average(calibrated, weights)
        score = _task_score(task, truth, average.argmax(-1), ensemble.labels) if len(known) else 0.0
        nll = (
            float(-np.log(np.clip(average[np.arange(len(truth)), truth], PROBABILITY_FLOOR, 1)).mean())
            if len(known)
            else 0.0
        )
        if best is None or (score, -nll) > best:
            best, chosen = (score, -nll), weights
    return [float(w) for w in chosen]


def _choose_tag_weights(
    ensemble: Ensemble,
    reports: Sequence[Report],
    outputs: Sequence[MemberOutputs],
    inputs: EnsembleInputs,
    mode: WeightMode,
) -> list[float]:
    able = [i for i, out in enumerate(outputs) if out.keyword_logits is not None]
    candidates = [np.ones(len(able)) / len(able)] if mode == "equal" else _simplex(len(able), WEIGHT_STEP)
    known = [i for i, r in enumerate(reports) if r.keywords is not None]
    gold = [{(s.start, s.end, s.type) for s in reports[i].keywords or []} for i in known]
    best_score, chosen = -1.0, candidates[0]
    for partial in candidates:
        weights = np.zeros(len(outputs))
        weights[able] = partial
        tags = ensemble._combined_tags(outputs, list(weights))
        combined = ModelOutputs({}, tags, inputs.encoded.offsets, inputs.encoded.special)
        guesses = predicted_spans(inputs.texts, combined, ensemble.labels)
        score = m.span_scores(gold, [guesses[i] for i in known])["f1"]
        if score > best_score + 1e-12:
            best_score, chosen = score, weights
    return [float(w) for w in chosen]


def build_ensemble(
    members: list[Member], dev_reports: Sequence[Report], inputs: EnsembleInputs, *, mode: WeightMode = "dev"
) -> tuple[Ensemble, ModelOutputs, list[MemberOutputs]]:
    """Fit the members' temperatures, the weights and the ensemble's temperatures on dev; returns the ensemble
    and its and the members' dev outputs."""
    labels = next(member.labels for member in members if isinstance(member, RunMember))
    outputs = [member.outputs(inputs) for member in members]
    ensemble = Ensemble(members, labels, fit_member_temperatures(dev_reports, outputs, labels))
    for task in CLASSIFICATION_TASKS:
        ensemble.weights[task] = _choose_class_weights(ensemble, dev_reports, outputs, task, mode)
    ensemble.weights[SPAN_TASK] = _choose_tag_weights(ensemble, dev_reports, outputs, inputs, mode)
    combined = ensemble.combine(outputs, inputs)
    for task in CLASSIFICATION_TASKS:
        known, truth = _truth(dev_reports, task, labels)
        ensemble.temperatures[task] = m.fit_temperature(combined.logits[task][known], truth)
    ensemble.temperatures[SPAN_TASK] = 1.0
    logger.info("ensemble weights chosen on dev (%s): %s", mode, ensemble.weights)
    return ensemble, combined, outputs


def member_metrics(
    reports: list[Report],
    outputs: MemberOutputs,
    inputs: EnsembleInputs,
    labels: LabelSets,
    temperatures: dict[str, float],
) -> HeadlineMetrics:
    """A member's headline metrics alone (a member without a task or a tagger has None there)."""
    tags = outputs.keyword_logits or [
        np.zeros((len(ids), len(labels.keyword_tags))) for ids in inputs.encoded.input_ids
    ]
    logits = {
        task: outputs.logits.get(task, np.zeros((len(reports), len(labels.ids(task))))) for task in CLASSIFICATION_TASKS
    }
    whole = ModelOutputs(logits, tags, inputs.encoded.offsets, inputs.encoded.special)
    headline = HeadlineMetrics.of_split(evaluate_outputs(reports, whole, labels, temperatures=temperatures))
    missing = {
        "department_macro_f1": "department" not in outputs.logits,
        "sentiment_macro_f1": "sentiment" not in outputs.logits,
        "severity_qwk": "severity" not in outputs.logits,
        "keywords_f1": outputs.keyword_logits is None,
    }
    return HeadlineMetrics(**{name: None if missing[name] else value for name, value in headline.as_record().items()})


@dataclass
class ScoredSplit:
    """One split's reports with the ensemble's and the members' outputs on them."""

    reports: list[Report]
    inputs: EnsembleInputs
    combined: ModelOutputs
    members: list[MemberOutputs]


def headline_lines(rows: Iterable[tuple[str, str, HeadlineMetrics]]) -> list[str]:
    """A Markdown table of headline metrics, one row per (model, split, metrics)."""
    lines = [
        "| model | split | department macro-F1 | sentiment macro-F1 | severity QWK | keyword span F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, split, h in rows:
        lines.append(
            markdown_row(name, split, h.department_macro_f1, h.sentiment_macro_f1, h.severity_qwk, h.keywords_f1)
        )
    return lines


@dataclass
class EnsembleEvaluation:
    """``ensemble.json``: the members with their weights, and the headline metrics of the ensemble, of each member
    and of the baselines on every split."""

    members: list[dict[str, Any]]
    weight_mode: str
    headline: dict[str, dict[str, dict[str, float | None]]]  # {model: {split: headline record}}
    baselines: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "weight_mode": self.weight_mode,
            "headline": self.headline,
            "baselines": self.baselines,
        }

    def markdown(self) -> str:
        lines = [
            "# Ensemble",
            "",
            f"Weights chosen on dev ({self.weight_mode}); per task, in member order:",
            "",
            "| member | department | sentiment | severity | keywords |",
            "|---|---|---|---|---|",
        ]
        for member in self.members:
            weights = member["weights"]
            lines.append(markdown_row(member["member"], *(weights[task] for task in TASKS)))
        rows = [
            (name, split, HeadlineMetrics.of_record(record))
            for name, by_split in self.headline.items()
            for split, record in by_split.items()
        ]
        rows += [
            (f"baseline {name}", split, HeadlineMetrics.of_scores(scores))
            for name, by_split in self.baselines.items()
            for split, scores in by_split.items()
        ]
        lines += ["", *headline_lines(rows)]
        return "\n".join(lines) + "\n"


def score_splits(ensemble: Ensemble, splits: dict[str, ScoredSplit]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Headline metrics of the ensemble and of each member on each split."""
    headline: dict[str, dict[str, dict[str, float | None]]] = {"ensemble": {}}
    for split, scored in splits.items():
        metrics = evaluate_outputs(scored.reports, scored.combined, ensemble.labels, temperatures=ensemble.temperatures)
        headline["ensemble"][split] = HeadlineMetrics.of_split(metrics).as_record()
        for member, outputs, temperatures in zip(
            ensemble.members, scored.members, ensemble.member_temperatures, strict=True
        ):
            headline.setdefault(member.name, {})[split] = member_metrics(
                scored.reports, outputs, scored.inputs, ensemble.labels, temperatures
            ).as_record()
    return headline


def run_tokenizer(members: Sequence[Member]) -> tuple[Tokenizer, int, str]:
    """The tokenizer every run member shares, the first run's max length and the text prefix they all read with."""
    runs = [member for member in members if isinstance(member, RunMember)]
    prefixes = {member.text_prefix for member in runs}
    if len(prefixes) > 1:
        raise ConfigurationError(
            f"the runs of an ensemble must read their texts alike; their text prefixes differ: {sorted(prefixes)}"
        )
    return runs[0].tokenizer, runs[0].max_length, runs[0].text_prefix


def score_ensemble(
    ensemble: Ensemble, dev: ScoredSplit, others: dict[str, list[Report]]
) -> tuple[dict[str, ScoredSplit], dict[str, dict[str, dict[str, float | None]]]]:
    """Run the ensemble on more splits beside dev; the scored splits and every model's headline metrics."""
    tokenizer, max_length, text_prefix = run_tokenizer(ensemble.members)
    splits = {"dev": dev}
    for name, reports in others.items():
        inputs = EnsembleInputs.of_reports(reports, tokenizer, max_length, text_prefix)
        combined, members = ensemble.outputs(inputs)
        splits[name] = ScoredSplit(reports, inputs, combined, members)
    return splits, score_splits(ensemble, splits)


def fit_ensemble(
    specs: Sequence[str | Path], train: list[Report], dev: list[Report], *, mode: WeightMode = "dev"
) -> tuple[Ensemble, ScoredSplit]:
    """Load the members and choose the ensemble on dev; returns it and its dev outputs."""
    members = load_members(specs, train)
    tokenizer, max_length, text_prefix = run_tokenizer(members)
    inputs = EnsembleInputs.of_reports(dev, tokenizer, max_length, text_prefix)
    ensemble, combined, outputs = build_ensemble(members, dev, inputs, mode=mode)
    return ensemble, ScoredSplit(dev, inputs, combined, outputs)


def evaluate_ensemble(
    specs: Sequence[str | Path],
    data_path: Path,
    out_dir: Path,
    *,
    taxonomy_path: Path,
    train_path: Path | None = None,
    dev_path: Path | None = None,
    mode: WeightMode = "dev",
) -> EnsembleEvaluation:
    """`kommunrouter evaluate` with several models: the ensemble chosen on dev, scored on dev and on the data file
    beside each member and the baselines. Train and dev default to those of the first run's configuration."""
    from training.baselines import evaluate_baselines
    from training.data import load_reports, load_taxonomy
    from training.evaluate import write_evaluation
    from training.run_dir import Evaluation

    taxonomy = load_taxonomy(taxonomy_path)
    first_run = RunDir.containing(Path(next(str(s) for s in specs if str(s) != TFIDF_MEMBER)))
    config = first_run.config()
    train_file = train_path or config.train_file
    if train_file is None:
        raise ConfigurationError("the ensemble's classical members need labelled training reports: pass --train")
    train = load_reports(train_file, taxonomy)
    dev_file = dev_path or config.dev_file
    ensemble, dev = fit_ensemble(specs, train, load_reports(dev_file, taxonomy), mode=mode)
    others = {} if data_path.resolve() == dev_file.resolve() else {data_path.stem: load_reports(data_path, taxonomy)}
    splits, headline = score_ensemble(ensemble, dev, others)
    split_reports = {name: scored.reports for name, scored in splits.items()}
    baselines = evaluate_baselines(train, split_reports, ensemble.labels)
    evaluation = Evaluation(
        splits={
            name: evaluate_outputs(scored.reports, scored.combined, ensemble.labels, temperatures=ensemble.temperatures)
            for name, scored in splits.items()
        },
        temperatures=ensemble.temperatures,
        baselines=baselines,
        model="ensemble of " + ", ".join(member.name for member in ensemble.members),
        data=str(data_path),
    )
    write_evaluation(evaluation, out_dir, ensemble.labels)
    result = EnsembleEvaluation(ensemble.describe(), mode, headline, baselines)
    (out_dir / ENSEMBLE_FILE).write_text(json.dumps(result.to_json(), indent=2, default=float), encoding="utf-8")
    (out_dir / "ensemble.md").write_text(result.markdown(), encoding="utf-8")
    return result
