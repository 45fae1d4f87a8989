"""Evaluation of a training checkpoint or an exported artifact: classification metrics, severity MAE and QWK,
keyword span P/R/F1, calibration before and after temperature scaling; written as JSON, Markdown and PNGs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm

from app.artifact import (
    CLASSIFICATION_TASKS,
    MANIFEST_FILE,
    MODEL_FILE,
    SPAN_TASK,
    TOKENIZER_FILE,
    Manifest,
    output_name,
    read_manifest,
)
from app.inference.session import create_session
from app.inference.spans import decode_spans
from app.inference.tensors import pad_batch, softmax
from training import metrics as m
from training.data import Report
from training.markdown import markdown_row
from training.model import Encoded, LabelSets
from training.run_dir import EVALUATION_FILE, Evaluation, HeadlineMetrics, RunDir

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

# onnxruntime threads when evaluating or checking an exported graph (the build machines have 2 cores)
EVALUATION_THREADS = 2


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so that little padding is computed."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collect_outputs(
    run_batch: RunBatch, encoded: Encoded, batch_size: int, pad_id: int, *, progress: str | None = None
) -> ModelOutputs:
    """Run a model (PyTorch or onnxruntime, behind ``run_batch``) over encoded texts in length-sorted batches;
    ``progress`` names a progress bar (none without it)."""
    count = len(encoded.input_ids)
    logits: dict[str, np.ndarray] = {}
    keyword_logits: list[np.ndarray] = [np.empty(0)] * count
    batches = length_sorted_batches([len(ids) for ids in encoded.input_ids], batch_size)
    for indices in tqdm(batches, desc=progress, disable=progress is None, leave=False):
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
        spans = decode_spans(softmax(tag_logits), kept, labels.keyword_tags, text=text)
        result.append({(s.start, s.end, s.type) for s in spans})
    return result


def _classification_metrics(
    reports: list[Report], logits: np.ndarray, task: str, labels: LabelSets, temperature: float
) -> dict[str, Any]:
    ids = labels.ids(task)
    known = [i for i, r in enumerate(reports) if r.label(task) is not None]
    true = [ids.index(reports[i].label(task)) for i in known]  # type: ignore[arg-type]
    probabilities = softmax(logits[known], 1.0) if known else np.empty((0, len(ids)))
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
        scaled = softmax(logits[known], temperature)
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


def evaluate_checkpoint_outputs(path: Path, reports: list[Report], batch_size: int) -> ModelOutputs:
    """Outputs of a run's best checkpoint (PyTorch), for a run directory or its checkpoint directory."""
    from training.model import encode_texts, load_checkpoint, pad_token_id, torch_runner

    model, tokenizer, _ = load_checkpoint(path)
    config = RunDir.containing(path).config_or_default()
    encoded = encode_texts(tokenizer, [r.text for r in reports], config.max_length, text_prefix=config.text_prefix)
    runner = torch_runner(model, bf16=config.precision == "bf16")
    return collect_outputs(runner, encoded, batch_size, pad_token_id(tokenizer))


def artifact_outputs(artifact_dir: Path, manifest: Manifest, reports: list[Report]) -> ModelOutputs:
    """Outputs of an exported artifact on reports, in onnxruntime."""
    from tokenizers import Tokenizer

    from training.model import encode_texts

    tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
    spec = manifest.tokenizer
    encoded = encode_texts(tokenizer, [r.text for r in reports], spec.max_length, text_prefix=spec.text_prefix)
    session = create_session(artifact_dir / MODEL_FILE, intra_op_threads=EVALUATION_THREADS)
    return collect_outputs(onnx_runner(session), encoded, 16, manifest.tokenizer.pad_token_id)


def onnx_runner(session: ort.InferenceSession) -> RunBatch:
    """A function running an onnxruntime session on padded inputs (the interface evaluation uses)."""
    names = [o.name for o in session.get_outputs()]

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(names, {"input_ids": input_ids, "attention_mask": attention_mask})
        return dict(zip(names, values, strict=True))

    return run


def write_evaluation(evaluation: Evaluation, out_dir: Path, labels: LabelSets) -> None:
    """evaluation.json, evaluation.md, a confusion matrix per task and reliability diagrams, per split."""
    from training.plots import plot_confusion_matrix, plot_reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation.write(out_dir / EVALUATION_FILE)
    for split, metrics in evaluation.splits.items():
        for task in CLASSIFICATION_TASKS:
            plot_confusion_matrix(metrics[task], out_dir / f"{split}_{task}_confusion.png", f"{task} ({split})")
            if "calibration" in metrics[task]:
                plot_reliability(
                    metrics[task]["calibration"], out_dir / f"{split}_{task}_reliability.png", f"{task} ({split})"
                )
    (out_dir / "evaluation.md").write_text(evaluation_markdown(evaluation), encoding="utf-8")


def _summary_row(name: str, headline: HeadlineMetrics, severity_mae: float | None) -> str:
    h = headline
    return markdown_row(name, h.department_macro_f1, h.sentiment_macro_f1, h.severity_qwk, severity_mae, h.keywords_f1)


def evaluation_markdown(evaluation: Evaluation) -> str:
    """A short human summary: main metrics per split, beside the baselines when present."""
    lines = [
        "# Evaluation",
        "",
        "| split | department macro-F1 | sentiment macro-F1 | severity QWK | severity MAE | keyword span F1 |",
        "|---|---|---|---|---|---|",
    ]
    for split, r in evaluation.splits.items():
        lines.append(_summary_row(split, HeadlineMetrics.of_split(r), r["severity"]["mae"]))
    for name, by_split in evaluation.baselines.items():
        for split, b in by_split.items():
            lines.append(_summary_row(f"{split}: {name}", HeadlineMetrics.of_scores(b), b.get("severity_mae")))
    lines += [
        "",
        "## Calibration (expected calibration error, 10 bins)",
        "",
        "| split | task | temperature | ECE before | ECE after |",
        "|---|---|---|---|---|",
    ]
    for split, r in evaluation.splits.items():
        for task in CLASSIFICATION_TASKS:
            c = r[task].get("calibration")
            if c:
                lines.append(
                    f"| {split} | {task} | {c['temperature']:.3f} | {c['ece_before']:.3f} | {c['ece_after']:.3f} |"
                )
    if evaluation.training_seconds is not None:
        lines += ["", f"Training time: {evaluation.training_seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def evaluate_model(model_path: Path, data_path: Path, out_dir: Path, *, taxonomy_path: Path) -> Evaluation:
    """`kommunrouter evaluate`: a run/checkpoint directory or an exported artifact, on a JSONL file. Labels and
    temperatures are the model's own (the taxonomy file only validates the data)."""
    from training.data import load_reports, load_taxonomy

    reports = load_reports(data_path, load_taxonomy(taxonomy_path))
    temperatures: dict[str, float] | None
    if (model_path / MANIFEST_FILE).exists():
        from training.model import manifest_label_sets

        manifest = read_manifest(model_path)
        outputs = artifact_outputs(model_path, manifest, reports)
        labels = manifest_label_sets(manifest)
        temperatures = {task: spec.temperature for task, spec in manifest.tasks.items()}
    else:
        from training.model import read_label_sets

        outputs = evaluate_checkpoint_outputs(model_path, reports, 32)
        labels = read_label_sets(model_path)
        previous = RunDir.containing(model_path).evaluation()
        temperatures = None if previous is None else previous.temperatures
    evaluation = Evaluation(
        splits={data_path.stem: evaluate_outputs(reports, outputs, labels, temperatures=temperatures)},
        temperatures=temperatures,
        model=str(model_path),
        data=str(data_path),
    )
    write_evaluation(evaluation, out_dir, labels)
    return evaluation
