"""Distillation: an ensemble of teachers taught to a student with fewer transformer layers.

``kommunrouter distill --teachers RUN [--teachers tfidf ...] --config FILE --out DIR``:

1. the teachers form an ensemble (:mod:`training.ensemble`: members' temperatures and weights chosen on dev);
2. the student is cut from the first teacher run (:mod:`training.student`: its embeddings, evenly spread layers
   with the top one, its heads; the vocabulary and tokenizer stay the teacher's);
3. the student learns from the training reports plus unlabelled and augmented report texts: the teachers' soft
   targets of all four tasks (KL divergence at a temperature, scaled by its square) on every text, and the gold
   labels where a text has them, ``soft_weight`` and ``1 - soft_weight`` of the loss;
4. the run directory is a training run's (checkpoint, metrics per epoch, evaluation with baselines; exportable
   with ``kommunrouter export``) plus ``distillation.json``: the teachers and weights, the KL divergence of the
   student to the teachers on dev before and after, and the headline metrics of every teacher, the ensemble and
   the student on dev and test.

The configuration file holds training settings of the student (any ``kommunrouter train`` field; the rest are the
first teacher's) and a ``[distill]`` table of :class:`DistillConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.artifact import CLASSIFICATION_TASKS, SPAN_TASK, TOKENIZER_FILE, output_name
from app.errors import ConfigurationError
from app.inference.tensors import softmax
from training.config import TrainConfig, _help, build_config, parse_overrides, read_config_file
from training.data import Report, load_reports, read_unlabelled_texts
from training.ensemble import (
    TFIDF_MEMBER,
    Ensemble,
    EnsembleInputs,
    RunMember,
    WeightMode,
    fit_ensemble,
    headline_lines,
    score_ensemble,
)
from training.evaluate import ModelOutputs, collect_outputs, evaluate_checkpoint_outputs
from training.model import MultiTaskModel, encode_texts, pad_token_id, torch_runner
from training.run_dir import HeadlineMetrics, RunDir
from training.student import kept_layers, student_model
from training.train import (
    Batch,
    BatchLoss,
    RunData,
    TrainingResult,
    evaluate_run,
    load_run_data,
    prepare_training,
    run_epochs,
    set_up_process,
    start_run_dir,
    weighted_task_loss,
)

logger = logging.getLogger(__name__)

DISTILL_TABLE = "distill"
DISTILL_PREFIX = "distill."


@dataclass
class DistillConfig:
    """How the student learns from the teachers (the ``[distill]`` table; ``--set distill.<field>=...``)."""

    student_layers: int = _help(
        "Transformer layers of the student, taken evenly from the teacher with its top layer (6 of 12 measured "
        "2.2x the texts/s of the teacher as int8 on 2 cores, 4 of 12 2.3-3.3x: bench/results/student_speed.json).",
        6,
    )
    temperature: float = _help(
        "Softening temperature of the soft-target KL loss (the loss is scaled by its square).", 2.0
    )
    soft_weight: float = _help("Share of the soft-target loss; the gold-label loss gets the rest.", 0.7)
    unlabelled_file: Path | None = _help(
        "Unlabelled report texts learned from the teachers alone (JSONL with 'text', or one text per line).", None
    )
    augment_copies: int = _help(
        "Augmented variants of each training report, learned from the teachers alone: sentences dropped or "
        "reordered, words dropped, lower case, no diacritics.",
        1,
    )
    ensemble_weights: WeightMode = _help("dev: the ensemble's weights chosen on dev per task; equal.", "dev")

    def __post_init__(self) -> None:
        if self.unlabelled_file in ("", "none"):
            self.unlabelled_file = None
        elif self.unlabelled_file is not None:
            self.unlabelled_file = Path(self.unlabelled_file)
        problems = []
        if self.student_layers < 1:
            problems.append("student_layers must be at least 1")
        if self.temperature <= 0:
            problems.append("temperature must be positive")
        if not 0 <= self.soft_weight <= 1:
            problems.append("soft_weight must be in [0, 1]")
        if self.augment_copies < 0:
            problems.append("augment_copies must be >= 0")
        if self.ensemble_weights not in ("dev", "equal"):
            problems.append("ensemble_weights must be dev or equal")
        if problems:
            raise ConfigurationError("invalid distillation configuration: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def load_distill_config(
    path: Path | None, overrides: Sequence[str], *, teacher: TrainConfig, output_dir: Path
) -> tuple[TrainConfig, DistillConfig]:
    """The student's training configuration (the teacher's, then the file's top level, then ``--set``) and the
    distillation settings (the file's ``[distill]`` table, then ``--set distill.<field>=...``)."""
    values = read_config_file(path) if path is not None else {}
    distill_values = values.pop(DISTILL_TABLE, {})
    if not isinstance(distill_values, dict):
        raise ConfigurationError(f"[{DISTILL_TABLE}] must be a table")
    train_overrides = [o for o in overrides if not o.strip().startswith(DISTILL_PREFIX)]
    distill_overrides = [o.strip().removeprefix(DISTILL_PREFIX) for o in overrides if o not in train_overrides]
    student = teacher.to_json() | values | parse_overrides(train_overrides)
    # The student starts from the teacher: no base-encoder options apply, and it trains every layer it has.
    student |= {"output_dir": str(output_dir), "mlm_epochs": 0, "random_init": False}
    config = build_config(TrainConfig, student)
    options = build_config(DistillConfig, distill_values | parse_overrides(distill_overrides, DistillConfig))
    return config, options


# --- the texts the student learns from ------------------------------------------------------------------------

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
DIACRITICS = str.maketrans("åäöÅÄÖéÉ", "aaoAAOeE")


def _sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def augment_text(text: str, rng: random.Random) -> str:
    """A variant of a report as residents also write it: one or two of sentences dropped or reordered, words
    dropped, lower case, no diacritics. The labels may not survive it, so only the teachers judge it."""

    def drop_sentence(value: str) -> str:
        sentences = _sentences(value)
        if len(sentences) < 2:
            return value
        sentences.pop(rng.randrange(len(sentences)))
        return " ".join(sentences)

    def reorder(value: str) -> str:
        sentences = _sentences(value)
        rng.shuffle(sentences)
        return " ".join(sentences)

    def drop_words(value: str) -> str:
        words = value.split()
        kept = [w for w in words if rng.random() >= 0.12]
        return " ".join(kept) if len(kept) >= 3 else value

    operations = [drop_sentence, reorder, drop_words, str.lower, lambda v: v.translate(DIACRITICS)]
    result = text
    for operation in rng.sample(operations, rng.choice((1, 2))):
        result = operation(result)
    return result if result.strip() and result != text else drop_words(text)


@dataclass
class DistillationTexts:
    """The student's examples (gold reports first, then unlabelled and augmented texts without labels) and, per
    example, the training report it is or was made from (for the classical teacher's cross-fitting)."""

    reports: list[Report]
    sources: list[str | None]
    counts: dict[str, int]


def distillation_texts(train: list[Report], options: DistillConfig, seed: int) -> DistillationTexts:
    rng = random.Random(seed)
    reports = list(train)
    sources: list[str | None] = [r.id for r in train]
    unlabelled = read_unlabelled_texts(options.unlabelled_file) if options.unlabelled_file else []
    for i, text in enumerate(unlabelled):
        reports.append(Report(f"unlabelled-{i}", text, None, None, None, None, source="unlabelled"))
        sources.append(None)
    for copy in range(options.augment_copies):
        for report in train:
            text = augment_text(report.text, rng)
            reports.append(Report(f"{report.id}-aug{copy}", text, None, None, None, None, source="augmented"))
            sources.append(report.id)
    counts = {"gold": len(train), "unlabelled": len(unlabelled), "augmented": len(train) * options.augment_copies}
    return DistillationTexts(reports, sources, counts)


# --- soft targets and the loss --------------------------------------------------------------------------------


@dataclass
class SoftTargets:
    """The ensemble's calibrated probabilities per example, softened by the distillation temperature: per
    classification task [examples, labels], and per example [tokens, tags] with a mask of the tokens that count
    (not special tokens)."""

    classes: dict[str, torch.Tensor]
    tags: list[torch.Tensor]
    tag_mask: list[torch.Tensor]

    @classmethod
    def of(cls, ensemble: Ensemble, outputs: ModelOutputs, temperature: float) -> SoftTargets:
        classes = {
            task: torch.from_numpy(softmax(outputs.logits[task], ensemble.temperatures[task] * temperature)).float()
            for task in CLASSIFICATION_TASKS
        }
        tags = [torch.from_numpy(softmax(logits, temperature)).float() for logits in outputs.keyword_logits]
        masks = [torch.tensor([not special for special in specials]) for specials in outputs.special]
        return cls(classes, tags, masks)


def _soft_loss(student_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(target || student) over the last axis at a temperature, per row, scaled by the temperature squared."""
    log_student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_target = torch.log(target.clamp(min=1e-12))
    return (target * (log_target - log_student)).sum(-1) * temperature**2


def soft_target_loss(
    outputs: dict[str, torch.Tensor],
    targets: SoftTargets,
    indices: Sequence[int],
    config: TrainConfig,
    temperature: float,
) -> torch.Tensor:
    """The task-weighted soft-target loss of a batch: classification per text, keyword tags per counted token."""
    device = outputs[output_name(SPAN_TASK)].device
    rows = torch.as_tensor(list(indices))
    total = torch.zeros((), device=device)
    for task in CLASSIFICATION_TASKS:
        target = targets.classes[task][rows].to(device)
        total = total + config.task_weights[task] * _soft_loss(outputs[output_name(task)], target, temperature).mean()
    tag_logits = outputs[output_name(SPAN_TASK)]
    tag_target = torch.zeros(tag_logits.shape, device=device)
    mask = torch.zeros(tag_logits.shape[:2], dtype=torch.bool, device=device)
    for row, i in enumerate(indices):
        length = len(targets.tags[i])
        tag_target[row, :length] = targets.tags[i].to(device)
        mask[row, :length] = targets.tag_mask[i].to(device)
    if mask.any():
        per_token = _soft_loss(tag_logits[mask], tag_target[mask], temperature)
        total = total + config.task_weights[SPAN_TASK] * per_token.mean()
    return total


def distillation_loss(targets: SoftTargets, config: TrainConfig, options: DistillConfig) -> BatchLoss:
    """Soft targets on every example, gold labels where known, mixed by ``soft_weight``."""

    def loss(outputs: dict[str, torch.Tensor], batch: Batch, indices: Sequence[int]) -> torch.Tensor:
        soft = soft_target_loss(outputs, targets, indices, config, options.temperature)
        gold = weighted_task_loss(outputs, batch, config)
        return options.soft_weight * soft + (1 - options.soft_weight) * gold

    return loss


def kl_to_teachers(student: ModelOutputs, teachers: ModelOutputs, ensemble: Ensemble) -> dict[str, float]:
    """Mean KL(ensemble || student) per task on the same texts, at temperature 1 with both calibrated: per text for
    the classification tasks, per counted token for keyword tags."""
    result = {}
    for task in CLASSIFICATION_TASKS:
        target = torch.from_numpy(softmax(teachers.logits[task], ensemble.temperatures[task])).float()
        logits = torch.from_numpy(student.logits[task]).float()
        result[task] = float(_soft_loss(logits, target, 1.0).mean())
    per_token = []
    for s_logits, t_logits, specials in zip(
        student.keyword_logits, teachers.keyword_logits, teachers.special, strict=True
    ):
        keep = torch.tensor([not special for special in specials])
        target = torch.from_numpy(softmax(t_logits)).float()[keep]
        per_token.append(_soft_loss(torch.from_numpy(s_logits).float()[keep], target, 1.0))
    result[SPAN_TASK] = float(torch.cat(per_token).mean()) if per_token else 0.0
    return result


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class DistillationRecord:
    """``distillation.json`` of a student's run directory."""

    teachers: list[str]
    student_layers: int
    teacher_layers: int
    kept_teacher_layers: list[int]  # 1-based
    options: dict[str, Any]
    ensemble: list[dict[str, Any]]
    texts: dict[str, int]
    kl_to_teachers_dev: dict[str, dict[str, float]]  # {"before": {task: kl}, "after": {...}}
    headline: dict[str, dict[str, dict[str, float | None]]]  # {model: {split: headline record}}
    seconds: float

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, default=float), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> DistillationRecord:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def _first_run(teachers: Sequence[str | Path]) -> RunDir:
    runs = [Path(t) for t in teachers if str(t) != TFIDF_MEMBER]
    if not runs:
        raise ConfigurationError("distillation needs at least one teacher run (tfidf alone has no encoder to cut)")
    return RunDir.containing(runs[0])


def _prepare_student(
    config: TrainConfig, data: RunData, texts: DistillationTexts, teacher: RunMember, student: MultiTaskModel
) -> Any:
    """The epoch loop's state for the student: its examples are the distillation texts."""
    loop_data = dataclasses.replace(data, train_reports=texts.reports)
    prepared = prepare_training(config, loop_data, student.encoder, teacher.run.checkpoint_dir / TOKENIZER_FILE)
    # prepare_training made fresh heads (the optimiser holds their tensors): copy the teacher's into them
    prepared.unwrapped.heads.load_state_dict(student.heads.state_dict())
    return prepared


def distill(teachers: Sequence[str | Path], config: TrainConfig, options: DistillConfig) -> TrainingResult:
    """Distil the ensemble of ``teachers`` into a student and write its run directory (see the module doc)."""
    started = time.perf_counter()
    config = set_up_process(config)
    teacher_run = _first_run(teachers)
    run = start_run_dir(config)
    data = load_run_data(config)
    ensemble, dev = fit_ensemble(teachers, data.train_reports, data.dev_reports, mode=options.ensemble_weights)
    teacher = next(member for member in ensemble.members if isinstance(member, RunMember))
    if ensemble.labels != data.labels:
        raise ConfigurationError(f"the teachers predict other labels than {config.taxonomy_file} lists")
    if teacher.text_prefix != config.text_prefix:
        raise ConfigurationError(
            f"the student must read its texts as the teachers do (text_prefix {teacher.text_prefix!r})"
        )
    if teacher.max_length != config.max_length:
        raise ConfigurationError(
            f"the student must read as many tokens as the teachers (max_length {teacher.max_length})"
        )
    texts = distillation_texts(data.train_reports, options, config.seed)
    inputs = EnsembleInputs(
        [r.text for r in texts.reports],
        encode_texts(
            teacher.tokenizer, [r.text for r in texts.reports], config.max_length, text_prefix=config.text_prefix
        ),
        texts.sources,
    )
    logger.info("teachers' soft targets on %d texts (%s)", len(inputs), texts.counts)
    soft, _ = ensemble.outputs(inputs)
    student = student_model(teacher.model, options.student_layers, dropout=config.dropout)
    pad_id = pad_token_id(teacher.tokenizer)
    kl_before = kl_to_teachers(
        collect_outputs(torch_runner(student), dev.inputs.encoded, config.eval_batch_size, pad_id),
        dev.combined,
        ensemble,
    )
    prepared = _prepare_student(config, data, texts, teacher, student)
    prepared.batch_loss = distillation_loss(SoftTargets.of(ensemble, soft, options.temperature), config, options)
    progress = run_epochs(prepared, data, config, run)
    seconds = time.perf_counter() - started
    evaluation = evaluate_run(run, config, data, seconds)
    student_dev = evaluate_checkpoint_outputs(run.path, data.dev_reports, config.eval_batch_size)
    kl_after = kl_to_teachers(student_dev, dev.combined, ensemble)
    others = {}
    if config.test_file is not None and config.test_file.exists():
        others["test"] = load_reports(config.test_file, data.taxonomy)
    _, headline = score_ensemble(ensemble, dev, others)
    headline["student"] = {split: evaluation.headline(split).as_record() for split in evaluation.splits}
    depth = teacher.model.encoder.config.num_hidden_layers
    record = DistillationRecord(
        teachers=[str(t) for t in teachers],
        student_layers=options.student_layers,
        teacher_layers=depth,
        kept_teacher_layers=[i + 1 for i in kept_layers(depth, options.student_layers)],
        options=options.to_json(),
        ensemble=ensemble.describe(),
        texts=texts.counts,
        kl_to_teachers_dev={"before": kl_before, "after": kl_after},
        headline=headline,
        seconds=round(time.perf_counter() - started, 1),
    )
    record.write(run.distillation_path)
    _write_base_report(teacher_run, run, prepared.unwrapped)
    logger.info("KL to the teachers on dev: before %s, after %s", kl_before, kl_after)
    return TrainingResult(run.path, progress.best_epoch, evaluation.splits["dev"], seconds)


def _write_base_report(teacher_run: RunDir, run: RunDir, student: MultiTaskModel) -> None:
    """The teacher's base-encoder report, with the student's parameter count (the model card reads it)."""
    report = teacher_run.base_report()
    if report is None:
        return
    report["parameters"] = sum(p.numel() for p in student.encoder.parameters())
    report["distilled_from"] = str(teacher_run.path)
    run.base_report_path.write_text(json.dumps(report, indent=2), encoding="utf-8")


def headline_table(record: DistillationRecord) -> str:
    """A Markdown table of every model's headline metrics in a distillation record."""
    return "\n".join(
        headline_lines(
            (name, split, HeadlineMetrics.of_record(values))
            for name, by_split in record.headline.items()
            for split, values in by_split.items()
        )
    )
