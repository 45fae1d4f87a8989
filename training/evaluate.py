"""Evaluation of a training checkpoint or an exported artifact: classification metrics, severity MAE and QWK,
keyword span P/R/F1, calibration before and after temperature scaling; written as JSON, Markdown and PNGs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.artifact import CLASSIFICATION_TASKS, MANIFEST_FILE, SPAN_TASK, output_name
from app.inference.spans import decode_spans
from training import metrics as m
from training.data import Report
from training.model import Encoded, LabelSets

logger = logging.getLogger(__name__)


@dataclass
class ModelOutputs:
    """Raw model outputs for a list of texts: logits per classification task ([n, labels]), keyword logits per
    text ([tokens, tags]) and the tokens' character offsets."""

    logits: dict[str, np.ndarray]
    keyword_logits: list[np.ndarray]
    offsets: list[list[tuple[int, int]]]
    special: list[list[int]]


RunBatch = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so that little padding is computed."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(input_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``input_ids`` and ``attention_mask`` padded to the longest sequence."""
    longest = max(len(ids) for ids in input_ids)
    ids_array = np.full((len(input_ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(input_ids), longest), dtype=np.int64)
    for row, ids in enumerate(input_ids):
        ids_array[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return ids_array, mask


def collect_outputs(run_batch: RunBatch, encoded: Encoded, batch_size: int, pad_id: int) -> ModelOutputs:
    """Run a model (PyTorch or onnxruntime, behind ``run_batch``) over encoded texts in length-sorted batches."""
    count = len(encoded.input_ids)
    logits: dict[str, np.ndarray] = {}
    keyword_logits: list[np.ndarray] = [np.empty(0)] * count
    for indices in length_sorted_batches([len(ids) for ids in encoded.input_ids], batch_size):
        outputs = run_batch(*pad_batch([encoded.input_ids[i] for i in indices], pad_id))
        for task in CLASSIFICATION_TASKS:
            values = outputs[output_name(task)]
            if task not in logits:
                logits[task] = np.zeros((count, values.shape[-1]), dtype=np.float32)
            logits[task][indices] = values
        for row, i in enumerate(indices):
            keyword_logits[i] = outputs[output_name(SPAN_TASK)][row, : len(encoded.input_ids[i])]
    return ModelOutputs(logits, keyword_logits, encoded.offsets, encoded.special)


def predicted_spans(texts: Sequence[str], outputs: ModelOutputs, labels: LabelSets) -> list[set[tuple[int, int, str]]]:
    """Decoded keyword spans, with the service's own decoder."""
    result = []
    for text, tag_logits, offsets, special in zip(
        texts, outputs.keyword_logits, outputs.offsets, outputs.special, strict=True
    ):
        kept = [(0, 0) if is_special else offset for offset, is_special in zip(offsets, special, strict=True)]
        spans = decode_spans(m.softmax(tag_logits), kept, labels.keyword_tags, text=text)
        result.append({(s.start, s.end, s.type) for s in spans})
    return result


def _classification_metrics(
    reports: list[Report], logits: np.ndarray, task: str, labels: LabelSets, temperature: float
) -> dict[str, Any]:
    ids = labels.ids(task)
    known = [i for i, r in enumerate(reports) if r.label(task) is not None]
    true = [ids.index(reports[i].label(task)) for i in known]  # type: ignore[arg-type]
    probabilities = m.softmax(logits[known], 1.0) if known else np.empty((0, len(ids)))
    pred = [int(p) for p in probabilities.argmax(axis=-1)] if known else []
    matrix = m.confusion_matrix(true, pred, len(ids))
    result: dict[str, Any] = {
        "n": len(known),
        "accuracy": m.accuracy(true, pred),
        "macro_f1": m.macro_f1(matrix) if known else None,
        "per_class": dict(zip(ids, m.per_class_scores(matrix), strict=True)),
        "confusion_matrix": matrix.tolist(),
        "labels": ids,
    }
    if task == "severity":
        result["mae"] = m.mean_absolute_error(true, pred)
        result["quadratic_weighted_kappa"] = m.quadratic_weighted_kappa(true, pred, len(ids)) if known else None
    if known:
        correct = np.asarray(true) == np.asarray(pred)
        scaled = m.softmax(logits[known], temperature)
        result["calibration"] = {
            "temperature": temperature,
            "ece_before": m.expected_calibration_error(probabilities.max(axis=-1), correct),
            "ece_after": m.expected_calibration_error(scaled.max(axis=-1), correct),
            "bins_before": m.reliability_bins(probabilities.max(axis=-1), correct),
            "bins_after": m.reliability_bins(scaled.max(axis=-1), correct),
        }
    return result


def evaluate_outputs(
    reports: list[Report], outputs: ModelOutputs, labels: LabelSets, *, temperatures: dict[str, float] | None = None
) -> dict[str, Any]:
    """Every metric of every task for one split."""
    temperatures = temperatures or {}
    result: dict[str, Any] = {"n": len(reports)}
    for task in CLASSIFICATION_TASKS:
        result[task] = _classification_metrics(reports, outputs.logits[task], task, labels, temperatures.get(task, 1.0))
    known = [i for i, r in enumerate(reports) if r.keywords is not None]
    gold = [{(s.start, s.end, s.type) for s in reports[i].keywords or []} for i in known]
    guesses = predicted_spans([r.text for r in reports], outputs, labels)
    result[SPAN_TASK] = m.span_scores(gold, [guesses[i] for i in known])
    result[SPAN_TASK]["per_type"] = {
        span_type: m.span_scores(
            [{s for s in g if s[2] == span_type} for g in gold],
            [{s for s in guesses[i] if s[2] == span_type} for i in known],
        )
        for span_type in labels.span_types
    }
    return result


def fit_temperatures(reports: list[Report], outputs: ModelOutputs, labels: LabelSets) -> dict[str, float]:
    """Per-task softmax temperatures fitted on (dev) reports by negative log-likelihood."""
    temperatures = {}
    for task in CLASSIFICATION_TASKS:
        ids = labels.ids(task)
        known = [i for i, r in enumerate(reports) if r.label(task) is not None]
        targets = np.asarray([ids.index(reports[i].label(task)) for i in known], dtype=np.int64)  # type: ignore[arg-type]
        temperatures[task] = m.fit_temperature(outputs.logits[task][known], targets)
    temperatures[SPAN_TASK] = 1.0  # span scores are not used for decisions; their softmax stays uncalibrated
    return temperatures


def evaluate_checkpoint_outputs(run_dir: Path, reports: list[Report], batch_size: int) -> ModelOutputs:
    """Outputs of a run's best checkpoint (PyTorch)."""
    from training.model import encode_texts, load_checkpoint, torch_runner

    model, tokenizer, _ = load_checkpoint(run_dir)
    encoded = encode_texts(tokenizer, [r.text for r in reports], _max_length(run_dir))
    return collect_outputs(torch_runner(model), encoded, batch_size, tokenizer.token_to_id("<pad>") or 0)


def _max_length(run_dir: Path) -> int:
    config_path = run_dir / "config.json"
    if config_path.exists():
        return int(json.loads(config_path.read_text(encoding="utf-8"))["max_length"])
    return 128


def write_evaluation(report: dict[str, Any], out_dir: Path, labels: LabelSets) -> None:
    """evaluation.json, evaluation.md, a confusion matrix per task and reliability diagrams, per split."""
    from training.plots import plot_confusion_matrix, plot_reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    for split, metrics in report["splits"].items():
        for task in CLASSIFICATION_TASKS:
            plot_confusion_matrix(metrics[task], out_dir / f"{split}_{task}_confusion.png", f"{task} ({split})")
            if "calibration" in metrics[task]:
                plot_reliability(
                    metrics[task]["calibration"], out_dir / f"{split}_{task}_reliability.png", f"{task} ({split})"
                )
    (out_dir / "evaluation.md").write_text(evaluation_markdown(report), encoding="utf-8")


def format_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_row(*cells: str | float | None) -> str:
    """A Markdown table row: strings as they are, scores with three decimals, missing ones as '-'."""
    return "| " + " | ".join(cell if isinstance(cell, str) else format_score(cell) for cell in cells) + " |"


def evaluation_markdown(report: dict[str, Any]) -> str:
    """A short human summary: main metrics per split, beside the baselines when present."""
    lines = [
        "# Evaluation",
        "",
        "| split | department macro-F1 | sentiment macro-F1 | severity QWK | severity MAE | keyword span F1 |",
        "|---|---|---|---|---|---|",
    ]
    for split, r in report["splits"].items():
        lines.append(
            markdown_row(
                split,
                r["department"]["macro_f1"],
                r["sentiment"]["macro_f1"],
                r["severity"]["quadratic_weighted_kappa"],
                r["severity"]["mae"],
                r["keywords"]["f1"],
            )
        )
    for name, by_split in report.get("baselines", {}).items():
        for split, b in by_split.items():
            cells = [b.get(key) for key in ("department", "sentiment", "severity_qwk", "severity_mae", "keywords")]
            lines.append(markdown_row(f"{split}: {name}", *cells))
    lines += [
        "",
        "## Calibration (expected calibration error, 10 bins)",
        "",
        "| split | task | temperature | ECE before | ECE after |",
        "|---|---|---|---|---|",
    ]
    for split, r in report["splits"].items():
        for task in CLASSIFICATION_TASKS:
            c = r[task].get("calibration")
            if c:
                lines.append(
                    f"| {split} | {task} | {c['temperature']:.3f} | {c['ece_before']:.3f} | {c['ece_after']:.3f} |"
                )
    if "training_seconds" in report:
        lines += ["", f"Training time: {report['training_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def evaluate_model(model_path: Path, data_path: Path, out_dir: Path, *, taxonomy_path: Path) -> dict[str, Any]:
    """`kommunrouter evaluate`: a run/checkpoint directory or an exported artifact, on a JSONL file. Labels and
    temperatures are the model's own (the taxonomy file only validates the data)."""
    from training.data import load_reports, load_taxonomy

    reports = load_reports(data_path, load_taxonomy(taxonomy_path))
    temperatures: dict[str, float] | None
    if (model_path / MANIFEST_FILE).exists():
        from training.export import artifact_label_sets, artifact_outputs, artifact_temperatures

        outputs = artifact_outputs(model_path, reports)
        labels = artifact_label_sets(model_path)
        temperatures = artifact_temperatures(model_path)
    else:
        from training.model import read_label_sets

        outputs = evaluate_checkpoint_outputs(model_path, reports, 32)
        labels = read_label_sets(model_path)
        previous = model_path / "evaluation" / "evaluation.json"
        temperatures = json.loads(previous.read_text())["temperatures"] if previous.exists() else None
    metrics = evaluate_outputs(reports, outputs, labels, temperatures=temperatures)
    report = {
        "model": str(model_path),
        "data": str(data_path),
        "temperatures": temperatures,
        "splits": {data_path.stem: metrics},
    }
    write_evaluation(report, out_dir, labels)
    return report
