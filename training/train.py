"""Multi-task fine-tuning with transfer-learning technique: discriminative learning rates, gradual unfreezing,
feature extraction, warm-up and decay, early stopping on dev, and optional masked-LM adaptation first."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm

from app.artifact import CLASSIFICATION_TASKS, SPAN_TASK, TOKENIZER_FILE, output_name
from training.base_model import ensure_base_encoder
from training.config import TrainConfig
from training.data import Report, Taxonomy, load_reports, load_taxonomy
from training.evaluate import collect_outputs, evaluate_outputs, fit_temperatures, pad_batch, write_evaluation
from training.model import (
    IGNORE_INDEX,
    Encoded,
    LabelSets,
    MultiTaskModel,
    build_encoder,
    encode_texts,
    save_checkpoint,
    token_tags,
    torch_runner,
)

logger = logging.getLogger(__name__)

TAXONOMY_FILE = "taxonomy.json"


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
    """A share of the reports with the department mix kept (at least one report of every department)."""
    if fraction >= 1:
        return list(reports)
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


def make_examples(reports: list[Report], tokenizer: Tokenizer, labels: LabelSets, max_length: int) -> Examples:
    encoded = encode_texts(tokenizer, [r.text for r in reports], max_length)
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


def dev_score(metrics: dict[str, Any]) -> float:
    """The one number early stopping watches: the mean of each task's main dev metric."""
    main = [
        metrics["department"]["macro_f1"],
        metrics["sentiment"]["macro_f1"],
        metrics["severity"]["quadratic_weighted_kappa"],
        metrics["keywords"]["f1"],
    ]
    return float(np.mean([m for m in main if m is not None]))


def resolve_device(config: TrainConfig) -> str:
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


@dataclass
class TrainingResult:
    run_dir: Path
    best_epoch: int
    dev_metrics: dict[str, Any]
    seconds: float


def train(config: TrainConfig) -> TrainingResult:
    """Train one model as the config says and write the run directory (config, metrics per epoch, best
    checkpoint, evaluation report with baselines)."""
    started = time.perf_counter()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    run_dir = config.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_json(), indent=2), encoding="utf-8")
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    shutil.copyfile(config.taxonomy_file, run_dir / TAXONOMY_FILE)

    taxonomy = load_taxonomy(config.taxonomy_file)
    labels = label_sets_from(taxonomy)
    all_train_reports = load_reports(config.train_file, taxonomy)
    train_reports = stratified_subset(all_train_reports, config.train_fraction, config.seed)
    dev_reports = load_reports(config.dev_file, taxonomy)
    base_dir = ensure_base_encoder(
        config.base_model,
        trim_vocab=config.trim_vocab,
        # the vocabulary comes from all of train, so that every learning-curve point shares one base encoder
        extra_texts=[r.text for r in all_train_reports],
        heldout_texts=[r.text for r in dev_reports],
    )
    tokenizer_path = base_dir / TOKENIZER_FILE
    if (base_dir / "base_report.json").exists():
        shutil.copyfile(base_dir / "base_report.json", run_dir / "base_report.json")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    pad_id = tokenizer.token_to_id("<pad>") or 0
    encoder = build_encoder(base_dir, random_init=config.random_init)
    if config.mlm_epochs:
        from training.adaptation import adapt_with_masked_lm

        adapt_with_masked_lm(encoder, tokenizer, _mlm_texts(config, train_reports), config)
    model = MultiTaskModel(encoder, labels.counts(), dropout=config.dropout)

    accelerator = Accelerator(
        cpu=resolve_device(config) == "cpu", mixed_precision="bf16" if config.precision == "bf16" else "no"
    )
    train_examples = make_examples(train_reports, tokenizer, labels, config.max_length)
    dev_examples = make_examples(dev_reports, tokenizer, labels, config.max_length)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    steps_per_epoch = max(1, math.ceil(len(train_examples) / config.batch_size) // accelerator.num_processes)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    logger.info(
        "training on %d reports (%d dev), %d epochs of %d steps, device %s",
        len(train_examples),
        len(dev_examples),
        epochs,
        steps_per_epoch,
        accelerator.device,
    )
    best, best_epoch, waited, step = -math.inf, -1, 0, 0
    rng = random.Random(config.seed)
    unwrapped: MultiTaskModel = accelerator.unwrap_model(model)
    for epoch in range(epochs):
        trainable = set_trainable_layers(unwrapped, config, epoch)
        model.train()
        running = 0.0
        progress = tqdm(
            _process_share(
                bucketed_batches([len(ids) for ids in train_examples.encoded.input_ids], config.batch_size, rng),
                accelerator,
            ),
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not accelerator.is_local_main_process,
            leave=False,
        )
        for indices in progress:
            batch = collate(train_examples, indices, pad_id).to(accelerator.device)
            with accelerator.autocast():
                outputs = model(batch.input_ids, batch.attention_mask)
            losses = task_losses(outputs, batch, config)
            loss = sum(config.task_weights[task] * value for task, value in losses.items())
            assert isinstance(loss, torch.Tensor)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            factor = learning_rate_factor(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            running += loss.item()
            progress.set_postfix(loss=f"{loss.item():.3f}")
        if step < max(config.min_steps, warmup_steps(total_steps, config)) and epoch + 1 < epochs:
            # Small training sets run many short epochs: judging (and stopping) them before the warm-up and the
            # promised minimum of steps are over would stop a model that has not started learning.
            continue
        outputs_dev = collect_outputs(
            torch_runner(unwrapped, accelerator.device), dev_examples.encoded, config.eval_batch_size, pad_id
        )
        metrics = evaluate_outputs(dev_reports, outputs_dev, labels)
        score = dev_score(metrics)
        record = {
            "epoch": epoch + 1,
            "train_loss": running / steps_per_epoch,
            "dev_score": score,
            "trainable_layers": trainable,
            "dev": _main_metrics(metrics),
        }
        if accelerator.is_main_process:
            with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        logger.info("epoch %d: loss %.4f, dev score %.4f", epoch + 1, record["train_loss"], score)
        if score > best:
            best, best_epoch, waited = score, epoch + 1, 0
            if accelerator.is_main_process:
                save_checkpoint(unwrapped, tokenizer_path, labels, run_dir)
        else:
            waited += 1
            if config.early_stopping_patience and waited >= config.early_stopping_patience:
                logger.info("early stopping after epoch %d (best epoch %d)", epoch + 1, best_epoch)
                break
    seconds = time.perf_counter() - started
    if not accelerator.is_main_process:
        return TrainingResult(run_dir, best_epoch, {}, seconds)
    dev_metrics = evaluate_run(run_dir, config, taxonomy, train_reports, dev_reports, seconds)
    return TrainingResult(run_dir, best_epoch, dev_metrics, seconds)


def _main_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "department_macro_f1": metrics["department"]["macro_f1"],
        "sentiment_macro_f1": metrics["sentiment"]["macro_f1"],
        "severity_qwk": metrics["severity"]["quadratic_weighted_kappa"],
        "keywords_f1": metrics["keywords"]["f1"],
    }


def _mlm_texts(config: TrainConfig, train_reports: list[Report]) -> list[str]:
    if config.mlm_file is None:
        return [r.text for r in train_reports]
    texts = []
    for line in config.mlm_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            texts.append(json.loads(line)["text"] if line.lstrip().startswith("{") else line.strip())
    return texts


def evaluate_run(
    run_dir: Path,
    config: TrainConfig,
    taxonomy: Taxonomy,
    train_reports: list[Report],
    dev_reports: list[Report],
    seconds: float,
) -> dict[str, Any]:
    """Evaluate the best checkpoint: temperatures fitted on dev, dev and test metrics, baselines beside them."""
    from training.evaluate import evaluate_checkpoint_outputs

    dev_outputs = evaluate_checkpoint_outputs(run_dir, dev_reports, config.eval_batch_size)
    labels = label_sets_from(taxonomy)
    temperatures = fit_temperatures(dev_reports, dev_outputs, labels)
    splits = {"dev": dev_reports}
    if config.test_file is not None and config.test_file.exists():
        splits["test"] = load_reports(config.test_file, taxonomy)
    report: dict[str, Any] = {"training_seconds": round(seconds, 1), "temperatures": temperatures, "splits": {}}
    for split, reports in splits.items():
        outputs = (
            dev_outputs if split == "dev" else evaluate_checkpoint_outputs(run_dir, reports, config.eval_batch_size)
        )
        report["splits"][split] = evaluate_outputs(reports, outputs, labels, temperatures=temperatures)
    if config.run_baselines:
        from training.baselines import evaluate_baselines

        report["baselines"] = evaluate_baselines(train_reports, splits, labels)
    write_evaluation(report, run_dir / "evaluation", labels)
    return report["splits"]["dev"]
