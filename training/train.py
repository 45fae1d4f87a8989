"""Multi-task fine-tuning with transfer-learning technique: discriminative learning rates, gradual unfreezing,
feature extraction, warm-up and decay, early stopping on dev, and optional masked-LM adaptation first."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm
from transformers import BertModel

from app.artifact import CLASSIFICATION_TASKS, SPAN_TASK, TOKENIZER_FILE, output_name
from app.inference.tensors import pad_batch
from training.base_model import ensure_base_encoder
from training.config import TrainConfig
from training.data import Report, Taxonomy, load_reports, load_taxonomy
from training.descriptions import centre_sample, description_layouts, initialise_description_heads
from training.evaluate import (
    collect_outputs,
    evaluate_checkpoint_outputs,
    evaluate_outputs,
    fit_temperatures,
    write_evaluation,
)
from training.model import (
    IGNORE_INDEX,
    Encoded,
    LabelSets,
    MultiTaskModel,
    build_encoder,
    encode_texts,
    pad_token_id,
    save_checkpoint,
    token_tags,
    torch_runner,
)
from training.run_dir import BASE_REPORT_FILE, Evaluation, HeadlineMetrics, RunDir
from training.unlabelled import mask_token_id, masked_copy, perturb_text, read_texts, unlabelled_losses

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """A padded batch: inputs and one label tensor per task (IGNORE_INDEX where a label is unknown)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: dict[str, torch.Tensor]

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            {task: tensor.to(device) for task, tensor in self.labels.items()},
        )


@dataclass
class Examples:
    """Reports turned into token ids and label indices."""

    reports: list[Report]
    encoded: Encoded
    labels: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.reports)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def label_sets_from(taxonomy: Taxonomy) -> LabelSets:
    return LabelSets(
        department=taxonomy.label_ids("department"),
        sentiment=taxonomy.label_ids("sentiment"),
        severity=taxonomy.label_ids("severity"),
        span_types=taxonomy.label_ids("keywords"),
    )


def stratified_subset(reports: Sequence[Report], fraction: float, seed: int) -> list[Report]:
    """A share of the reports with the department mix kept (at least one report of every department; none for
    a share of 0)."""
    if fraction >= 1:
        return list(reports)
    if fraction <= 0:
        return []
    by_department: dict[str, list[Report]] = {}
    for report in reports:
        by_department.setdefault(report.department or "", []).append(report)
    rng = random.Random(seed)
    subset = []
    for department in sorted(by_department):
        group = sorted(by_department[department], key=lambda r: r.id)
        rng.shuffle(group)
        subset += group[: max(1, round(len(group) * fraction))]
    return sorted(subset, key=lambda r: r.id)


def make_examples(reports: list[Report], tokenizer: Tokenizer, labels: LabelSets, config: TrainConfig) -> Examples:
    encoded = encode_texts(tokenizer, [r.text for r in reports], config.max_length, text_prefix=config.text_prefix)
    targets: dict[str, list[Any]] = {}
    for task in CLASSIFICATION_TASKS:
        index = {label: i for i, label in enumerate(labels.ids(task))}
        targets[task] = [index.get(r.label(task) or "", IGNORE_INDEX) for r in reports]
    targets[SPAN_TASK] = [
        [IGNORE_INDEX] * len(ids)
        if r.keywords is None
        else token_tags(r.text, offsets, special, r.keywords, labels.keyword_tags)
        for r, ids, offsets, special in zip(reports, encoded.input_ids, encoded.offsets, encoded.special, strict=True)
    ]
    return Examples(reports, encoded, targets)


def collate(examples: Examples, indices: Sequence[int], pad_id: int) -> Batch:
    """Pad the chosen examples to the longest of them."""
    input_ids, attention = pad_batch([examples.encoded.input_ids[i] for i in indices], pad_id)
    tags = torch.full(input_ids.shape, IGNORE_INDEX, dtype=torch.long)
    for row, i in enumerate(indices):
        tags[row, : len(examples.labels[SPAN_TASK][i])] = torch.tensor(examples.labels[SPAN_TASK][i])
    labels = {task: torch.tensor([examples.labels[task][i] for i in indices]) for task in CLASSIFICATION_TASKS}
    labels[SPAN_TASK] = tags
    return Batch(torch.from_numpy(input_ids), torch.from_numpy(attention), labels)


def bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of reports of similar length, in random order: far less padding than random batches (most of the
    cost on a CPU), while each epoch still mixes differently (ties and batch order are shuffled)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] // 8, rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _process_share(batches: list[list[int]], accelerator: Accelerator) -> list[list[int]]:
    """This process's share of the epoch's batches under `accelerate launch` (all of them in one process). Every
    process gets the same number of batches, as distributed data parallel needs."""
    processes = accelerator.num_processes
    usable = len(batches) - len(batches) % processes if len(batches) >= processes else len(batches)
    return batches[accelerator.process_index : usable : processes]


def task_losses(outputs: dict[str, torch.Tensor], batch: Batch, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The loss of each task over the reports where its label is known (tasks without any label are left out)."""
    losses: dict[str, torch.Tensor] = {}
    for task in CLASSIFICATION_TASKS:
        target = batch.labels[task]
        known = target != IGNORE_INDEX
        if not known.any():
            continue
        logits = outputs[output_name(task)][known].float()
        loss = nn.functional.cross_entropy(logits, target[known], label_smoothing=config.label_smoothing)
        if task == "severity" and config.severity_loss == "ordinal":
            # Expected distance between predicted and true level: confusing lag with akut costs more than with medel.
            levels = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
            distance = (levels.unsqueeze(0) - target[known].unsqueeze(1).to(logits.dtype)).abs()
            loss = loss + (logits.softmax(-1) * distance).sum(-1).mean()
        losses[task] = loss
    tags = batch.labels[SPAN_TASK]
    if (tags != IGNORE_INDEX).any():
        logits = outputs[output_name(SPAN_TASK)].float()
        weights = torch.full((logits.shape[-1],), config.keyword_tag_weight, device=logits.device)
        weights[0] = 1.0  # tag 0 is O
        losses[SPAN_TASK] = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tags.reshape(-1), weight=weights, ignore_index=IGNORE_INDEX
        )
    return losses


def weighted_task_loss(outputs: dict[str, torch.Tensor], batch: Batch, config: TrainConfig) -> torch.Tensor:
    """The gold-label losses of the tasks, weighted by ``config.task_weights`` and summed."""
    zero = torch.zeros((), device=next(iter(outputs.values())).device)
    return sum((config.task_weights[task] * value for task, value in task_losses(outputs, batch, config).items()), zero)


def parameter_groups(model: MultiTaskModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Discriminative learning rates: the heads learn fastest, each lower encoder layer ``layer_lr_decay`` slower."""
    groups: list[dict[str, Any]] = [{"params": list(model.heads.parameters()), "lr": config.head_learning_rate}]
    layers = model.encoder_layers
    depth = len(layers)
    for i, layer in enumerate(layers):
        groups.append(
            {"params": list(layer.parameters()), "lr": config.learning_rate * config.layer_lr_decay ** (depth - 1 - i)}
        )
    groups.append(
        {
            "params": list(model.encoder.embeddings.parameters()),
            "lr": config.learning_rate * config.layer_lr_decay**depth,
        }
    )
    for group in groups:
        group["initial_lr"] = group["lr"]
    return groups


def warmup_steps(total: int, config: TrainConfig) -> int:
    return int(total * config.warmup_ratio)


def learning_rate_factor(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then linear or cosine decay to 0 (or constant)."""
    warmup = warmup_steps(total, config)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, 1 - progress)


def set_trainable_layers(model: MultiTaskModel, config: TrainConfig, epoch: int) -> int:
    """Freeze what the strategy says for this epoch; returns how many encoder layers train (embeddings count once
    every layer does)."""
    depth = len(model.encoder_layers)
    if config.strategy == "feature_extraction":
        trainable = 0
    elif config.gradual_unfreezing:
        trainable = min(depth, (epoch + 1) * config.unfreeze_layers_per_epoch)
    else:
        trainable = depth
    for i, layer in enumerate(model.encoder_layers):
        layer.requires_grad_(i >= depth - trainable)
    model.encoder.embeddings.requires_grad_(trainable == depth)
    if config.freeze_word_embeddings or trainable < depth:
        model.encoder.embeddings.word_embeddings.requires_grad_(False)
    return trainable


def resolve_device(config: TrainConfig) -> str:
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX): only then does bf16 autocast beat fp32 on the CPU."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo.read_text().splitlines())


def resolve_precision(config: TrainConfig) -> TrainConfig:
    """The config with precision=auto made concrete for this machine, so that the run directory records what ran."""
    if config.precision != "auto":
        return config
    if resolve_device(config) == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = cpu_has_amx()
    return dataclasses.replace(config, precision="bf16" if bf16 else "fp32")


@dataclass
class TrainingResult:
    run_dir: Path
    best_epoch: int
    dev_metrics: dict[str, Any]
    seconds: float


@dataclass
class RunData:
    """The reports a run trains and judges on, with their label sets."""

    taxonomy: Taxonomy
    labels: LabelSets
    all_train_reports: list[Report]  # before train_fraction: the base encoder's vocabulary comes from all of them
    train_reports: list[Report]
    dev_reports: list[Report]
    unlabelled_texts: list[str]

    @property
    def zero_shot(self) -> bool:
        """No labelled report to train on: the description heads alone are the model."""
        return not self.train_reports


@dataclass
class Schedule:
    """How long a run trains, in batches of what size (see :func:`plan_schedule`)."""

    batch_size: int
    steps_per_epoch: int
    total_steps: int

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


def plan_schedule(labelled: int, config: TrainConfig, processes: int = 1) -> Schedule:
    """Batch size and number of steps for ``labelled`` training reports.

    ``epochs`` epochs, at least ``min_steps`` steps, at most ``max_steps``. With the adaptive schedule, small
    training sets get smaller batches (an epoch of about 4 steps, batches of 4 at the least): 10 reports in one
    batch of 16 would make 100 steps 100 identical full-batch steps."""
    batch_size = config.batch_size
    if config.adaptive_schedule:
        batch_size = min(config.batch_size, max(4, math.ceil(labelled / 4)))
    steps_per_epoch = max(1, math.ceil(labelled / batch_size) // processes)
    total = max(config.epochs * steps_per_epoch, config.min_steps)
    if config.max_steps:
        total = min(total, config.max_steps)
    return Schedule(batch_size=batch_size, steps_per_epoch=steps_per_epoch, total_steps=total)


@dataclass
class UnlabelledData:
    """Reports without labels: their texts (perturbed anew at every step) and their clean encodings."""

    texts: list[str]
    encoded: Encoded
    mask_id: int


# The loss of one batch, given the model's outputs, the batch and the indices of its examples.
BatchLoss = Callable[[dict[str, torch.Tensor], Batch, Sequence[int]], torch.Tensor]


@dataclass
class Prepared:
    """Everything the epoch loop works with, placed by accelerate."""

    model: MultiTaskModel  # wrapped for distributed training where it runs
    unwrapped: MultiTaskModel
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    train_examples: Examples
    dev_examples: Examples
    unlabelled: UnlabelledData | None
    tokenizer: Tokenizer
    tokenizer_path: Path
    pad_id: int
    schedule: Schedule

    @property
    def steps_per_epoch(self) -> int:
        return self.schedule.steps_per_epoch

    @property
    def epochs(self) -> int:
        return self.schedule.epochs

    batch_loss: BatchLoss | None = None  # None: the weighted gold-label loss (distillation sets its own)

    @property
    def total_steps(self) -> int:
        return self.schedule.total_steps


@dataclass
class Progress:
    """Where the epoch loop stands: steps taken, the best dev score and when it was reached."""

    step: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    waited: int = 0
    judged_at_step: int = 0


def set_up_process(config: TrainConfig) -> TrainConfig:
    """Threads and seed for a run; returns the config with precision=auto resolved for this machine (the run
    directory records that one)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    return resolve_precision(config)


def start_run_dir(config: TrainConfig) -> RunDir:
    """The run directory with its configuration and taxonomy; metrics of an earlier run there are cleared."""
    run = RunDir(config.output_dir)
    run.write_config(config)
    run.epoch_metrics_path.unlink(missing_ok=True)
    shutil.copyfile(config.taxonomy_file, run.taxonomy_path)
    return run


def load_run_data(config: TrainConfig) -> RunData:
    taxonomy = load_taxonomy(config.taxonomy_file)
    all_train_reports = [] if config.train_file is None else load_reports(config.train_file, taxonomy)
    train_reports = stratified_subset(all_train_reports, config.train_fraction, config.seed)
    unlabelled = [] if config.unlabelled_file is None else read_texts(config.unlabelled_file)
    if config.unlabelled_from_train:
        chosen = {report.id for report in train_reports}
        unlabelled += [report.text for report in all_train_reports if report.id not in chosen]
    return RunData(
        taxonomy=taxonomy,
        labels=label_sets_from(taxonomy),
        all_train_reports=all_train_reports,
        train_reports=train_reports,
        dev_reports=load_reports(config.dev_file, taxonomy),
        unlabelled_texts=unlabelled,
    )


def prepare_encoder(config: TrainConfig, data: RunData, run: RunDir) -> tuple[BertModel, Path]:
    """The base encoder (built into the cache when missing), adapted by masked-LM when asked; and its tokenizer."""
    base_dir = ensure_base_encoder(
        config.base_model,
        trim_vocab=config.trim_vocab,
        # the vocabulary comes from all of train, so that every learning-curve point shares one base encoder
        extra_texts=[r.text for r in data.all_train_reports] or data.unlabelled_texts,
        heldout_texts=[r.text for r in data.dev_reports],
    )
    if (base_dir / BASE_REPORT_FILE).exists():
        shutil.copyfile(base_dir / BASE_REPORT_FILE, run.base_report_path)
    encoder = build_encoder(base_dir, random_init=config.random_init)
    if config.mlm_epochs:
        from training.adaptation import adapt_with_masked_lm

        tokenizer = Tokenizer.from_file(str(base_dir / TOKENIZER_FILE))
        mlm_texts = read_texts(config.mlm_file) if config.mlm_file else [r.text for r in data.train_reports]
        adapt_with_masked_lm(encoder, tokenizer, mlm_texts, config)
    return encoder, base_dir / TOKENIZER_FILE


def build_model(config: TrainConfig, data: RunData, encoder: BertModel, tokenizer: Tokenizer) -> MultiTaskModel:
    """The multi-task model; with head_init=descriptions its classification heads start from the taxonomy."""
    if config.head_init == "random":
        return MultiTaskModel(encoder, data.labels.counts(), dropout=config.dropout)
    layouts, texts = description_layouts(
        data.taxonomy, data.labels, config.description_scale, config.description_encoder_gradient
    )
    model = MultiTaskModel(encoder, data.labels.counts(), dropout=config.dropout, layouts=layouts)
    reports = [r.text for r in data.train_reports] + data.unlabelled_texts
    initialise_description_heads(
        model,
        tokenizer,
        texts,
        centre_sample(reports or [r.text for r in data.dev_reports], config.seed),
        text_prefix=config.text_prefix,
        description_prefix=config.description_prefix,
        max_length=config.max_length,
    )
    if data.zero_shot:
        model.silence_keywords()
    return model


def prepare_unlabelled(config: TrainConfig, data: RunData, tokenizer: Tokenizer) -> UnlabelledData | None:
    if not (config.uses_unlabelled and data.unlabelled_texts and data.train_reports):
        return None
    texts = data.unlabelled_texts
    encoded = encode_texts(tokenizer, texts, config.max_length, text_prefix=config.text_prefix)
    return UnlabelledData(texts=texts, encoded=encoded, mask_id=mask_token_id(tokenizer))


def prepare_training(config: TrainConfig, data: RunData, encoder: BertModel, tokenizer_path: Path) -> Prepared:
    """Model, optimiser and examples on accelerate's device; the number of epochs and steps."""
    set_seed(config.seed)  # again: building the base encoder (or finding it cached) must not change the run
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    model = build_model(config, data, encoder, tokenizer)
    accelerator = Accelerator(
        cpu=resolve_device(config) == "cpu", mixed_precision="bf16" if config.precision == "bf16" else "no"
    )
    train_examples = make_examples(data.train_reports, tokenizer, data.labels, config)
    dev_examples = make_examples(data.dev_reports, tokenizer, data.labels, config)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), weight_decay=config.weight_decay)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    return Prepared(
        model=wrapped,
        unwrapped=accelerator.unwrap_model(wrapped),
        optimizer=optimizer,
        accelerator=accelerator,
        train_examples=train_examples,
        dev_examples=dev_examples,
        unlabelled=prepare_unlabelled(config, data, tokenizer),
        tokenizer=tokenizer,
        tokenizer_path=tokenizer_path,
        pad_id=pad_token_id(tokenizer),
        schedule=plan_schedule(len(train_examples), config, accelerator.num_processes),
    )


def unlabelled_batch(
    prepared: Prepared, config: TrainConfig, rng: random.Random
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A random batch of unlabelled reports: the clean inputs and those of freshly perturbed copies."""
    unlabelled = prepared.unlabelled
    assert unlabelled is not None
    chosen = rng.sample(range(len(unlabelled.texts)), min(config.unlabelled_batch_size, len(unlabelled.texts)))
    texts = [
        perturb_text(unlabelled.texts[i], config.perturbation_rate, rng, strip=position % 2 == 0)
        for position, i in enumerate(chosen)
    ]
    copies = encode_texts(prepared.tokenizer, texts, config.max_length, text_prefix=config.text_prefix)
    perturbed = [
        masked_copy(ids, special, config.perturbation_rate, unlabelled.mask_id, rng)
        for ids, special in zip(copies.input_ids, copies.special, strict=True)
    ]
    device = prepared.accelerator.device
    clean = pad_batch([unlabelled.encoded.input_ids[i] for i in chosen], prepared.pad_id)
    noisy = pad_batch(perturbed, prepared.pad_id)
    return (
        (torch.from_numpy(clean[0]).to(device), torch.from_numpy(clean[1]).to(device)),
        (torch.from_numpy(noisy[0]).to(device), torch.from_numpy(noisy[1]).to(device)),
    )


def unlabelled_loss(prepared: Prepared, config: TrainConfig, rng: random.Random) -> torch.Tensor:
    """The consistency (and pseudo-label) loss of one unlabelled batch, weighted per task."""
    clean, noisy = unlabelled_batch(prepared, config, rng)
    model = prepared.model
    model.eval()  # the target: no dropout, no gradient
    with torch.no_grad(), prepared.accelerator.autocast():
        target = model(*clean)
    model.train()
    with prepared.accelerator.autocast():
        outputs = model(*noisy)
    losses = unlabelled_losses(target, outputs, config.pseudo_label_threshold)
    total = sum(config.task_weights[task] * value for task, value in losses.items())
    assert isinstance(total, torch.Tensor)
    return config.consistency_weight * total


def train_epoch(prepared: Prepared, config: TrainConfig, epoch: int, progress: Progress, rng: random.Random) -> float:
    """One pass over this process's share of the batches; returns the summed loss."""
    accelerator, model, optimizer = prepared.accelerator, prepared.model, prepared.optimizer
    model.train()
    lengths = [len(ids) for ids in prepared.train_examples.encoded.input_ids]
    bar = tqdm(
        _process_share(bucketed_batches(lengths, prepared.schedule.batch_size, rng), accelerator),
        desc=f"epoch {epoch + 1}/{prepared.epochs}",
        disable=not accelerator.is_local_main_process,
        leave=False,
    )
    running = 0.0
    for indices in bar:
        if progress.step >= prepared.total_steps:
            break
        batch = collate(prepared.train_examples, indices, prepared.pad_id).to(accelerator.device)
        with accelerator.autocast():
            outputs = model(batch.input_ids, batch.attention_mask)
        if prepared.batch_loss is None:
            loss = weighted_task_loss(outputs, batch, config)
        else:
            loss = prepared.batch_loss(outputs, batch, indices)
        if prepared.unlabelled is not None:
            loss = loss + unlabelled_loss(prepared, config, rng)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        factor = learning_rate_factor(progress.step, prepared.total_steps, config)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        optimizer.step()
        optimizer.zero_grad()
        progress.step += 1
        running += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return running


def judge_epoch(
    prepared: Prepared, data: RunData, config: TrainConfig, run: RunDir, record: dict[str, Any], progress: Progress
) -> bool:
    """Score the epoch on dev, log it, keep the checkpoint when it is the best so far; True when training must
    stop early."""
    outputs = collect_outputs(
        torch_runner(prepared.unwrapped, prepared.accelerator.device, bf16=config.precision == "bf16"),
        prepared.dev_examples.encoded,
        config.eval_batch_size,
        prepared.pad_id,
    )
    headline = HeadlineMetrics.of_split(evaluate_outputs(data.dev_reports, outputs, data.labels))
    score = headline.mean()
    record |= {"dev_score": score, "dev": headline.as_record()}
    epoch = record["epoch"]
    if prepared.accelerator.is_main_process:
        run.append_epoch(record)
    logger.info("epoch %d: loss %.4f, dev score %.4f", epoch, record["train_loss"], score)
    progress.judged_at_step = progress.step
    if score > progress.best:
        progress.best, progress.best_epoch, progress.waited = score, epoch, 0
        if prepared.accelerator.is_main_process:
            save_checkpoint(prepared.unwrapped, prepared.tokenizer_path, data.labels, run.path)
        return False
    progress.waited += 1
    may_stop = not config.adaptive_schedule or progress.step >= config.min_steps
    if config.early_stopping_patience and progress.waited >= config.early_stopping_patience and may_stop:
        logger.info("early stopping after epoch %d (best epoch %d)", epoch, progress.best_epoch)
        return True
    return False


def judging_due(progress: Progress, prepared: Prepared, config: TrainConfig, last: bool) -> bool:
    """Whether dev is judged after this epoch. Never before warm-up is over (a model that has not started learning
    would be stopped); without the adaptive schedule not before min_steps either, and then after every epoch; with
    it, every eval_every_steps steps at the earliest (tiny epochs would spend the run on judging)."""
    if last:
        return True
    if progress.step < warmup_steps(prepared.total_steps, config):
        return False
    if not config.adaptive_schedule:
        return progress.step >= config.min_steps
    return progress.step - progress.judged_at_step >= config.eval_every_steps


def run_epochs(prepared: Prepared, data: RunData, config: TrainConfig, run: RunDir) -> Progress:
    """Train epoch after epoch, judging on dev as :func:`judging_due` says."""
    logger.info(
        "training on %d reports (%d dev, %d unlabelled), %d steps in epochs of %d batches of %d, device %s",
        len(prepared.train_examples),
        len(prepared.dev_examples),
        0 if prepared.unlabelled is None else len(prepared.unlabelled.texts),
        prepared.total_steps,
        prepared.steps_per_epoch,
        prepared.schedule.batch_size,
        prepared.accelerator.device,
    )
    progress = Progress()
    rng = random.Random(config.seed)
    for epoch in range(prepared.epochs):
        trainable = set_trainable_layers(prepared.unwrapped, config, epoch)
        running = train_epoch(prepared, config, epoch, progress, rng)
        last = epoch + 1 == prepared.epochs or progress.step >= prepared.total_steps
        if not judging_due(progress, prepared, config, last):
            continue
        record = {"epoch": epoch + 1, "train_loss": running / prepared.steps_per_epoch, "trainable_layers": trainable}
        if judge_epoch(prepared, data, config, run, record, progress) or last:
            break
    return progress


def train(config: TrainConfig) -> TrainingResult:
    """Train one model as the config says and write the run directory (config, metrics per epoch, best
    checkpoint, evaluation report with baselines)."""
    started = time.perf_counter()
    config = set_up_process(config)
    run = start_run_dir(config)
    data = load_run_data(config)
    encoder, tokenizer_path = prepare_encoder(config, data, run)
    prepared = prepare_training(config, data, encoder, tokenizer_path)
    if data.zero_shot:
        logger.info("no labelled reports: zero-shot, the description heads are the model (no training step)")
        progress = Progress(best_epoch=0)
        if prepared.accelerator.is_main_process:
            save_checkpoint(prepared.unwrapped, prepared.tokenizer_path, data.labels, run.path)
    else:
        progress = run_epochs(prepared, data, config, run)
    seconds = time.perf_counter() - started
    if not prepared.accelerator.is_main_process:
        return TrainingResult(run.path, progress.best_epoch, {}, seconds)
    evaluation = evaluate_run(run, config, data, seconds)
    return TrainingResult(run.path, progress.best_epoch, evaluation.splits["dev"], seconds)


def evaluate_run(run: RunDir, config: TrainConfig, data: RunData, seconds: float) -> Evaluation:
    """Evaluate the best checkpoint: temperatures fitted on dev, dev and test metrics, baselines beside them."""
    dev_outputs = evaluate_checkpoint_outputs(run.path, data.dev_reports, config.eval_batch_size)
    temperatures = fit_temperatures(data.dev_reports, dev_outputs, data.labels)
    splits = {"dev": data.dev_reports}
    if config.test_file is not None and config.test_file.exists():
        splits["test"] = load_reports(config.test_file, data.taxonomy)
    evaluation = Evaluation(
        splits={},
        temperatures=temperatures,
        training_seconds=round(seconds, 1),
        labelled_reports=len(data.train_reports),
        unlabelled_reports=len(data.unlabelled_texts),
    )
    for split, reports in splits.items():
        outputs = (
            dev_outputs if split == "dev" else evaluate_checkpoint_outputs(run.path, reports, config.eval_batch_size)
        )
        evaluation.splits[split] = evaluate_outputs(reports, outputs, data.labels, temperatures=temperatures)
    if config.run_baselines:
        from training.baselines import evaluate_baselines

        evaluation.baselines = evaluate_baselines(data.train_reports, splits, data.labels)
    write_evaluation(evaluation, run.evaluation_dir, data.labels)
    return evaluation
