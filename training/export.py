"""Export a training run to the artifact the service loads: one ONNX graph for all four heads, checked against
PyTorch, optionally optimised and int8-quantised, with the manifest of app/artifact.py."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from torch import nn

from app.artifact import (
    CLASSIFICATION_TASKS,
    INPUT_NAMES,
    MANIFEST_FILE,
    MODEL_FILE,
    PARITY_FILE,
    SPAN_TASK,
    TASKS,
    TOKENIZER_FILE,
    ConfidenceBands,
    Label,
    Manifest,
    ParitySpec,
    TaskSpec,
    TokenizerSpec,
    output_name,
    read_manifest,
    sha256_file,
    write_manifest,
)
from app.errors import KommunrouterError
from app.inference.session import create_session
from app.inference.tensors import pad_batch, softmax
from training.confidence import band_report, choose_bands
from training.config import TrainConfig
from training.data import Report, data_version, load_reports, load_taxonomy
from training.evaluate import EVALUATION_THREADS, ModelOutputs, collect_outputs, evaluate_outputs, onnx_runner
from training.model import (
    Encoded,
    LabelSets,
    MultiTaskModel,
    encode_texts,
    load_checkpoint,
    pad_token_id,
    torch_runner,
)
from training.model_card import write_model_card
from training.run_dir import Evaluation, HeadlineMetrics, RunDir

logger = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
INT8_MIN_AGREEMENT = 0.99
INT8_MAX_METRIC_DROP = 0.01
OPSET = 17
# Dev texts in the artifact's parity sample: enough to see an engine's rate and drift, few enough to run on every
# candidate engine within the service's start-up budget.
PARITY_TEXTS = 64
PARITY_REFERENCE = "PyTorch fp32 (the checkpoint)"


class ExportParityError(KommunrouterError):
    """The exported graph does not reproduce the PyTorch model; ``failures`` lists every check that failed."""

    code = "export_parity_failed"

    def __init__(self, failures: Sequence[str]) -> None:
        self.failures = list(failures)
        super().__init__("export parity failed: " + "; ".join(self.failures))


class _ExportWrapper(nn.Module):
    """The model with a tuple of outputs in a fixed order, as torch.onnx.export wants."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(input_ids, attention_mask)
        return tuple(outputs[output_name(task)] for task in TASKS)


def export_onnx(model: MultiTaskModel, path: Path) -> None:
    """Trace the model to ONNX with dynamic batch and sequence axes (eager attention, which ORT can fuse)."""
    model.eval()
    model.encoder.set_attn_implementation("eager")
    example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes |= {output_name(task): {0: "batch"} for task in CLASSIFICATION_TASKS}
    dynamic_axes[output_name(SPAN_TASK)] = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        _ExportWrapper(model),
        example,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=[output_name(task) for task in TASKS],
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        dynamo=False,
    )


def optimise_graph(source: Path, target: Path, model: MultiTaskModel) -> None:
    """onnxruntime's transformer fusions (attention, LayerNorm, GELU) for a BERT-shaped encoder."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    config = model.encoder.config
    options = FusionOptions("bert")
    # The word-embedding Gather must stay a Gather: int8 export quantises it (most of the model's bytes), and the
    # EmbedLayerNormalization fusion would hide it (the artifact then ships fp32 embeddings, 2.5x the size).
    options.enable_embed_layer_norm = False
    optimised = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
    )
    optimised.save_model_to_file(str(target))


EMBEDDING_BLOCK = 32


def _quantise_word_embeddings(graph: Any) -> None:
    """Store the word-embedding matrix as int8 with one fp32 scale per block of 32 values of a row
    (Gather -> Cast -> Reshape -> Mul by the gathered scales -> Reshape): a quarter of the size, and block scales
    keep every dimension of every word close to fp32."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = {init.name: init for init in graph.graph.initializer}
    for position, node in enumerate(list(graph.graph.node)):
        if node.op_type != "Gather" or "word_embeddings" not in node.name or node.input[0] not in initializers:
            continue
        table = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
        rows, width = table.shape
        blocks = table.reshape(rows, width // EMBEDDING_BLOCK, EMBEDDING_BLOCK)
        scales = np.maximum(np.abs(blocks).max(axis=2, keepdims=True), 1e-12) / 127.0
        quantised = np.clip(np.round(blocks / scales), -127, 127).astype(np.int8)
        name, output, prefix = node.input[0], node.output[0], node.name
        graph.graph.initializer.remove(initializers[name])
        graph.graph.initializer.extend(
            [
                numpy_helper.from_array(quantised, f"{name}_int8"),
                numpy_helper.from_array(scales.astype(np.float32), f"{name}_scale"),
                numpy_helper.from_array(np.array([0, 0, width], dtype=np.int64), f"{name}_shape"),
            ]
        )
        new_nodes = [
            helper.make_node("Gather", [f"{name}_int8", node.input[1]], [f"{output}_q"], name=f"{prefix}_int8"),
            helper.make_node("Cast", [f"{output}_q"], [f"{output}_f"], to=TensorProto.FLOAT, name=f"{prefix}_cast"),
            helper.make_node("Gather", [f"{name}_scale", node.input[1]], [f"{output}_s"], name=f"{prefix}_scale"),
            helper.make_node("Mul", [f"{output}_f", f"{output}_s"], [f"{output}_b"], name=f"{prefix}_dequantise"),
            helper.make_node("Reshape", [f"{output}_b", f"{name}_shape"], [output], name=f"{prefix}_rows"),
        ]
        graph.graph.node.remove(node)
        for offset, new_node in enumerate(new_nodes):
            graph.graph.node.insert(position + offset, new_node)


def quantise_graph(source: Path, target: Path) -> None:
    """int8 weights: the encoder's MatMul weights in blocks of 128 with a scale each (MatMulNBits, computed with
    int8 kernels, accuracy level 4) and the word embeddings in blocks of 32. Measured on the default model's dev split:
    department agreement with fp32 99.4%, where onnxruntime's quantize_dynamic (per-tensor dynamic activation
    quantisation) reached only 97.6%."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    graph = onnx.load(str(source))
    _quantise_word_embeddings(graph)
    quantiser = MatMulNBitsQuantizer(graph, bits=8, block_size=128, is_symmetric=True, accuracy_level=4)
    quantiser.process()
    quantiser.model.save_model_to_file(str(target), False)


def _max_abs_difference(a: ModelOutputs, b: ModelOutputs) -> dict[str, float]:
    differences = {task: float(np.abs(a.logits[task] - b.logits[task]).max()) for task in CLASSIFICATION_TASKS}
    differences[SPAN_TASK] = max(
        float(np.abs(x - y).max()) for x, y in zip(a.keyword_logits, b.keyword_logits, strict=True)
    )
    return differences


def manifest_scores(metrics: dict[str, Any]) -> dict[str, float | None]:
    """A split's scores as the manifest records them: the headline metrics, plus severity macro-F1."""
    return HeadlineMetrics.of_split(metrics).as_scores() | {"severity": metrics["severity"]["macro_f1"]}


def _latency_ms(session: ort.InferenceSession, encoded_ids: list[list[int]], pad_id: int) -> float:
    """Median batch-1 latency over the first texts (the measure that decides whether an optimisation pays)."""
    run = onnx_runner(session)
    timings = []
    for ids in encoded_ids[:40]:
        inputs = pad_batch([ids], pad_id)
        started = time.perf_counter()
        run(*inputs)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.median(timings))


@dataclass
class ExportReport:
    """What export checked and measured."""

    fp32_max_abs_diff: dict[str, float] = field(default_factory=dict)
    int8_department_agreement: float | None = None
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    optimised: bool = False
    sizes_bytes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class _Parity:
    """The dev reports every graph is checked on, and the PyTorch outputs it is compared with."""

    reports: list[Report]
    labels: LabelSets
    encoded: Encoded
    pad_id: int
    reference: ModelOutputs

    def run(self, session: ort.InferenceSession) -> ModelOutputs:
        return collect_outputs(onnx_runner(session), self.encoded, 16, self.pad_id)

    def scores(self, outputs: ModelOutputs) -> dict[str, float | None]:
        return manifest_scores(evaluate_outputs(self.reports, outputs, self.labels))

    def latency_ms(self, session: ort.InferenceSession) -> float:
        return _latency_ms(session, self.encoded.input_ids, self.pad_id)


def _check_fp32(parity: _Parity, fp32_path: Path, result: ExportReport) -> ModelOutputs:
    """The plain graph against PyTorch: every logit within FP32_TOLERANCE."""
    session = create_session(fp32_path, intra_op_threads=EVALUATION_THREADS)
    fp32 = parity.run(session)
    result.fp32_max_abs_diff = _max_abs_difference(parity.reference, fp32)
    result.failures += [
        f"fp32 {task} logits differ from PyTorch by {diff:.2e} (> {FP32_TOLERANCE:g})"
        for task, diff in result.fp32_max_abs_diff.items()
        if diff > FP32_TOLERANCE
    ]
    result.metrics["pytorch"] = parity.scores(parity.reference)
    result.metrics["fp32"] = parity.scores(fp32)
    result.latency_ms["fp32"] = parity.latency_ms(session)
    return fp32


def _optimised_if_it_pays(parity: _Parity, model: MultiTaskModel, fp32_path: Path, result: ExportReport) -> Path:
    """The transformer-fused graph where it is as exact as the plain one and faster on this machine."""
    optimised_path = fp32_path.with_name("optimised.onnx")
    try:
        optimise_graph(fp32_path, optimised_path, model)
        session = create_session(optimised_path, intra_op_threads=EVALUATION_THREADS)
        result.latency_ms["fp32_optimised"] = parity.latency_ms(session)
        exact = max(_max_abs_difference(parity.reference, parity.run(session)).values()) <= FP32_TOLERANCE
        if exact and result.latency_ms["fp32_optimised"] < result.latency_ms["fp32"]:
            result.optimised = True
    except Exception as exc:  # the optimiser is best effort: an unfusable graph is exported unoptimised
        logger.warning("transformer graph optimisation skipped: %s", exc)
    logger.info("graph optimisation %s", "kept" if result.optimised else "not kept")
    return optimised_path if result.optimised else fp32_path


def _quantise_and_check(parity: _Parity, graph: Path, fp32: ModelOutputs, result: ExportReport) -> Path:
    """int8 weights, kept only with department agreement >= INT8_MIN_AGREEMENT and no task losing more than
    INT8_MAX_METRIC_DROP against fp32."""
    int8_path = graph.with_name("int8.onnx")
    quantise_graph(graph, int8_path)
    session = create_session(int8_path, intra_op_threads=EVALUATION_THREADS)
    int8 = parity.run(session)
    result.latency_ms["int8"] = parity.latency_ms(session)
    agreement = float(np.mean(fp32.logits["department"].argmax(-1) == int8.logits["department"].argmax(-1)))
    result.int8_department_agreement = agreement
    if agreement < INT8_MIN_AGREEMENT:
        result.failures.append(f"int8 department agreement {agreement:.3f} < {INT8_MIN_AGREEMENT}")
    result.metrics["int8"] = parity.scores(int8)
    for task in TASKS:
        value, before = result.metrics["int8"][task], result.metrics["fp32"][task]
        if value is not None and before is not None and before - value > INT8_MAX_METRIC_DROP:
            result.failures.append(
                f"int8 {task} score {value:.3f} is more than {INT8_MAX_METRIC_DROP} below fp32 {before:.3f}"
            )
    return int8_path


def check_and_build_graph(
    model: MultiTaskModel,
    reports: list[Report],
    labels: LabelSets,
    encoded: Encoded,
    pad_id: int,
    work: Path,
    quantize: Literal["none", "int8"],
) -> tuple[Path, ExportReport, ModelOutputs]:
    """Export, compare with PyTorch, optimise when it pays and quantise; returns the final graph's path, the
    report and the PyTorch outputs it was checked against. Every parity failure is collected, then one
    ExportParityError is raised."""
    result = ExportReport()
    fp32_path = work / "fp32.onnx"
    export_onnx(model, fp32_path)
    reference = collect_outputs(torch_runner(model), encoded, 16, pad_id)
    parity = _Parity(reports, labels, encoded, pad_id, reference)
    fp32 = _check_fp32(parity, fp32_path, result)
    if quantize == "int8":
        # Not the fused graph: its Attention nodes pack Q, K and V into fp32 weights the int8 weight quantiser
        # does not touch (measured on the 12-layer model: 58.6 MB instead of 43 MB, for no gain at int8).
        graph = _quantise_and_check(parity, fp32_path, fp32, result)
    else:
        graph = _optimised_if_it_pays(parity, model, fp32_path, result)
    result.sizes_bytes = {path.stem: path.stat().st_size for path in work.glob("*.onnx")}
    return graph, result, reference


def parity_indices(count: int, size: int = PARITY_TEXTS) -> list[int]:
    """``size`` indices spread evenly over ``count`` texts (all of them when there are fewer)."""
    return sorted({round(i) for i in np.linspace(0, count - 1, min(size, count))})


def write_parity_sample(
    out_dir: Path, texts: Sequence[str], encoded: Encoded, pad_id: int, reference: ModelOutputs
) -> ParitySpec:
    """The artifact's parity sample: dev texts, their padded token ids and the PyTorch fp32 logits of every task
    (keyword logits padded with zeros), which the service holds every engine to at start-up."""
    indices = parity_indices(len(texts))
    input_ids, attention_mask = pad_batch([encoded.input_ids[i] for i in indices], pad_id)
    keywords = np.zeros((len(indices), input_ids.shape[1], reference.keyword_logits[0].shape[-1]), np.float32)
    for row, i in enumerate(indices):
        keywords[row, : len(reference.keyword_logits[i])] = reference.keyword_logits[i]
    arrays: dict[str, np.ndarray] = {
        "texts": np.array([texts[i] for i in indices], dtype=str),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        output_name(SPAN_TASK): keywords,
    }
    for task in CLASSIFICATION_TASKS:
        arrays[output_name(task)] = reference.logits[task][indices].astype(np.float32)
    np.savez_compressed(out_dir / PARITY_FILE, allow_pickle=False, **arrays)
    return ParitySpec(texts=len(indices), reference=PARITY_REFERENCE)


def _task_specs(run: RunDir, labels: LabelSets, temperatures: dict[str, float]) -> dict[str, TaskSpec]:
    taxonomy = load_taxonomy(run.taxonomy_path)
    specs = {}
    for task in CLASSIFICATION_TASKS:
        by_id = {label.id: label for label in taxonomy.labels(task)}
        specs[task] = TaskSpec(
            labels=[by_id.get(i, Label(id=i, name=i)) for i in labels.ids(task)],
            temperature=temperatures.get(task, 1.0),
            ordinal=task == "severity",
        )
    by_id = {label.id: label for label in taxonomy.labels("keywords")}
    specs[SPAN_TASK] = TaskSpec(labels=[by_id.get(i, Label(id=i, name=i)) for i in labels.span_types])
    return specs


def _shown_path(path: Path) -> str:
    """A data path as the model card shows it: relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _provenance(
    run: RunDir, config: TrainConfig, model: MultiTaskModel, evaluation: Evaluation | None
) -> dict[str, Any]:
    data = {}
    for key in ("train_file", "dev_file", "test_file"):
        path: Path | None = getattr(config, key)
        if path is not None and path.exists():
            data[key] = {"path": _shown_path(path), "sha256": sha256_file(path), "reports": sum(1 for _ in path.open())}
    encoder = model.encoder.config
    config_json = config.to_json()
    return {
        "base_model": config.base_model,
        "base_report": run.base_report(),
        "encoder": {
            "layers": encoder.num_hidden_layers,
            "hidden_size": encoder.hidden_size,
            "attention_heads": encoder.num_attention_heads,
        },
        "training_data": data,
        # what the run learned from (None for runs evaluated before these were recorded)
        "labelled_reports": None if evaluation is None else evaluation.labelled_reports,
        "unlabelled_reports": None if evaluation is None else evaluation.unlabelled_reports,
        "zero_shot": evaluation is not None and evaluation.labelled_reports == 0,
        "heads": {task: "description" if task in model.layouts else "linear" for task in CLASSIFICATION_TASKS},
        "data_version": None if config.train_file is None else data_version(config.train_file),
        "config_sha256": hashlib.sha256(json.dumps(config_json, sort_keys=True).encode()).hexdigest(),
        "config": config_json,
    } | ({} if (distillation := run.distillation()) is None else {"distillation": distillation})


def _manifest_metrics(evaluation: Evaluation | None, report: ExportReport) -> dict[str, Any]:
    """The run's evaluation and the export's checks, as the manifest records them."""
    splits = {} if evaluation is None else evaluation.splits
    return {
        "evaluation": {split: manifest_scores(m) for split, m in splits.items()},
        "baselines": {} if evaluation is None else evaluation.baselines,
        "calibration": {
            split: {
                task: {key: m[task]["calibration"][key] for key in ("temperature", "ece_before", "ece_after")}
                for task in CLASSIFICATION_TASKS
                if "calibration" in m[task]
            }
            for split, m in splits.items()
        },
        "export": {
            "fp32_max_abs_diff": report.fp32_max_abs_diff,
            "int8_department_agreement": report.int8_department_agreement,
            "dev_scores": report.metrics,
            "optimised": report.optimised,
        },
    }


@dataclass
class _DepartmentAnswers:
    """Calibrated top department scores of an exported graph on labelled reports, and whether each was right."""

    scores: np.ndarray
    correct: np.ndarray


def department_answers(
    session: ort.InferenceSession,
    reports: list[Report],
    tokenizer: Tokenizer,
    labels: LabelSets,
    *,
    max_length: int,
    text_prefix: str,
    pad_id: int,
    temperature: float,
) -> _DepartmentAnswers:
    """The graph's calibrated department scores (as the service computes them) on the reports with a department."""
    known = [r for r in reports if r.department is not None]
    encoded = encode_texts(tokenizer, [r.text for r in known], max_length, text_prefix=text_prefix)
    outputs = collect_outputs(onnx_runner(session), encoded, 16, pad_id)
    probabilities = softmax(outputs.logits["department"], temperature)
    truth = np.asarray([labels.department.index(r.department or "") for r in known])
    return _DepartmentAnswers(probabilities.max(axis=-1), probabilities.argmax(axis=-1) == truth)


def confidence_bands(
    graph: Path, config: TrainConfig, taxonomy_path: Path, tokenizer: Tokenizer, labels: LabelSets, temperature: float
) -> tuple[ConfidenceBands, dict[str, Any]]:
    """Bands chosen on dev with the graph as shipped, and their precision and coverage on dev and test."""
    session = create_session(graph, intra_op_threads=EVALUATION_THREADS)
    taxonomy = load_taxonomy(taxonomy_path)
    splits = {"dev": config.dev_file}
    if config.test_file is not None and config.test_file.exists():
        splits["test"] = config.test_file
    answers = {
        split: department_answers(
            session,
            load_reports(path, taxonomy),
            tokenizer,
            labels,
            max_length=config.max_length,
            text_prefix=config.text_prefix,
            pad_id=pad_token_id(tokenizer),
            temperature=temperature,
        )
        for split, path in splits.items()
    }
    bands = choose_bands(answers["dev"].scores, answers["dev"].correct)
    reports = {split: band_report(a.scores, a.correct, bands) for split, a in answers.items()}
    logger.info("confidence bands: high >= %s, medium >= %s; %s", bands.high, bands.medium, reports)
    return bands, reports


def export_run(
    run_dir: Path,
    out_dir: Path,
    *,
    quantize: Literal["none", "int8"] = "int8",
    triton_dir: Path | None = None,
    routing_threshold: float = 0.5,
    model_version: str | None = None,
) -> ExportReport:
    """`kommunrouter export`: write the artifact directory for a training run."""
    run = RunDir(run_dir)
    config = run.config()
    evaluation = run.evaluation()
    model, tokenizer, labels = load_checkpoint(run.path)
    reports = load_reports(config.dev_file, load_taxonomy(run.taxonomy_path))
    encoded = encode_texts(tokenizer, [r.text for r in reports], config.max_length, text_prefix=config.text_prefix)
    pad_id = pad_token_id(tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        graph, report, reference = check_and_build_graph(model, reports, labels, encoded, pad_id, Path(tmp), quantize)
        if report.failures:
            raise ExportParityError(report.failures)
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(graph, out_dir / MODEL_FILE)
    (out_dir / TOKENIZER_FILE).write_bytes((run.checkpoint_dir / TOKENIZER_FILE).read_bytes())
    parity = write_parity_sample(out_dir, [r.text for r in reports], encoded, pad_id, reference)
    temperatures = (evaluation.temperatures if evaluation else None) or {}
    bands, band_metrics = confidence_bands(
        out_dir / MODEL_FILE, config, run.taxonomy_path, tokenizer, labels, temperatures.get("department", 1.0)
    )
    manifest = Manifest(
        model_version=model_version or f"{run.name}-{datetime.now(UTC):%Y%m%d%H%M}",
        tasks=_task_specs(run, labels, temperatures),
        tokenizer=TokenizerSpec(max_length=config.max_length, pad_token_id=pad_id, text_prefix=config.text_prefix),
        routing_threshold=routing_threshold,
        confidence_bands=bands,
        quantization=quantize,
        metrics=_manifest_metrics(evaluation, report) | {"confidence_bands": band_metrics},
        provenance=_provenance(run, config, model, evaluation),
        parity=parity,
    )
    write_manifest(out_dir, manifest)
    read_manifest(out_dir)  # what was written must load
    write_model_card(out_dir)
    if triton_dir is not None:
        write_triton_repository(out_dir, triton_dir, max_batch_size=64)
    logger.info("artifact written to %s (%d bytes)", out_dir, (out_dir / MODEL_FILE).stat().st_size)
    return report


TRITON_CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch_size}
input [
  {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }}
]
output [
{outputs}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
instance_group [ {{ kind: KIND_GPU count: 1 }} ]
"""


def write_triton_repository(
    artifact_dir: Path, triton_dir: Path, *, max_batch_size: int, name: str = "kommunrouter"
) -> Path:
    """An NVIDIA Triton model repository: ``<dir>/<name>/1/model.onnx`` and ``config.pbtxt`` with dynamic batching.
    Tokenisation and decoding stay with the client (or the kommunrouter service in front of Triton)."""
    manifest = read_manifest(artifact_dir)
    model_dir = triton_dir / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact_dir / MODEL_FILE, model_dir / "1" / MODEL_FILE)
    outputs = []
    for task in TASKS:
        dims = "-1, " + str(manifest.output_size(task)) if task == SPAN_TASK else str(manifest.output_size(task))
        outputs.append(f'  {{ name: "{output_name(task)}" data_type: TYPE_FP32 dims: [ {dims} ] }}')
    (model_dir / "config.pbtxt").write_text(
        TRITON_CONFIG.format(name=name, max_batch_size=max_batch_size, outputs=",\n".join(outputs)), encoding="utf-8"
    )
    shutil.copyfile(artifact_dir / MANIFEST_FILE, model_dir / MANIFEST_FILE)
    return model_dir
