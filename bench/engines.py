"""Engines side by side in one process: the shipped engine (what `auto` chose at start-up) beside its peers, on the
same texts, interleaved, at batch 1 and length-sorted batch 32.

Two families of rows, each with its own reference for department agreement:

- ``artifact``: the artifact's own graph through the service's ``ReportModel.predict`` (tokenisation, length-sorted
  calls in the engine's token budget, full decoding): onnxruntime, OpenVINO f32, OpenVINO bf16, and the service's
  choice (``auto``). Reference: onnxruntime, the engine export checks.
- ``checkpoint``: the same encoder shape in PyTorch fp32 (the reference) and bf16, CTranslate2 int8, and OpenVINO
  bf16 on an fp32 and on an int8 ONNX graph exported from it (the measurement that decides the artifact's graph
  precision). The weights are the training run's when ``--run`` exists; else the base encoder from the cache (the
  12-layer e5-small shape) with random heads: the speed is the shape's, and the agreement measures the numeric
  drift of each way from fp32 (random heads make it a harsher test than a trained one).

Also: each artifact engine at other token budgets (the per-engine default of KOMMUNROUTER_MAX_BATCH_TOKENS), the
start-up of `auto` (seconds, the choice), the cost of the work around the model call per text, and the CPU's flags.

    python -m bench.engines [--artifact models/default] [--run runs/default] [--base DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.inference import Predict, Timings, measure_interleaved
from bench.measure import (
    DEFAULT_ARTIFACT,
    DEFAULT_RUN,
    DEFAULT_TEXTS,
    RESULTS_DIR,
    THREADS,
    latency_ms,
    machine_info,
    read_texts,
    require,
    target,
    write_result,
)

BATCH_SIZE = 32
MODES = ("batch_1", "batch_32")
TOKEN_BUDGETS = (256, 1024, 4096)
SERVICE = "service"
ARTIFACT_REFERENCE = "onnxruntime"
CHECKPOINT_REFERENCE = "pytorch_fp32"

DESCRIPTIONS = {
    "onnxruntime": "the artifact's graph (int8 MatMulNBits) in onnxruntime, through ReportModel.predict",
    "openvino_f32": "the artifact's graph in OpenVINO, precision hint f32, through ReportModel.predict",
    "openvino_bf16": "the artifact's graph in OpenVINO, precision hint bf16 (AMX), through ReportModel.predict",
    SERVICE: "what the service serves: ReportModel.load(engine='auto'), the engine chosen at start-up",
    "pytorch_fp32": "transformers + PyTorch eager fp32 (length-sorted batches padded to their longest text)",
    "pytorch_bf16": "the same PyTorch model cast to bfloat16",
    "ctranslate2_int8": "CTranslate2 int8 encoder, mean pooling and the department head in numpy",
    "openvino_bf16_fp32_graph": "an fp32 ONNX graph of the same weights in OpenVINO bf16",
    "openvino_bf16_int8_graph": "the int8 graph export makes of the same weights (MatMulNBits) in OpenVINO bf16",
}


@dataclass
class Way:
    family: str
    predict: Predict


# --- the artifact family ---------------------------------------------------------------------------------------


def _report_model(artifact_dir: Path, engine: Any, max_batch_tokens: int | None = None) -> Any:
    from tokenizers import Tokenizer

    from app.artifact import TOKENIZER_FILE, read_manifest
    from app.inference.model import ReportModel

    tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
    return ReportModel(read_manifest(artifact_dir), engine, tokenizer, max_batch_tokens=max_batch_tokens)


def _departments(model: Any) -> Predict:
    return lambda texts: [prediction.department[0].label for prediction in model.predict(texts)]


def artifact_engines(artifact_dir: Path) -> dict[str, Callable[[], Any]]:
    """Loaders of the artifact's engines on this machine, by row name."""
    from app.artifact import MODEL_FILE
    from app.inference.engines import OnnxRuntimeEngine, OpenVinoEngine, openvino_precisions, read_openvino_model

    graph = artifact_dir / MODEL_FILE
    loaders: dict[str, Callable[[], Any]] = {
        "onnxruntime": lambda: OnnxRuntimeEngine.load(graph, providers=["CPUExecutionProvider"], threads=THREADS)
    }
    for precision in reversed(openvino_precisions()):
        loaders[f"openvino_{precision}"] = lambda p=precision: OpenVinoEngine.load(  # type: ignore[misc]
            read_openvino_model(graph), precision=p, threads=THREADS
        )
    return loaders


def auto_startup(artifact_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The service's own load (engine auto), timed, and what it chose."""
    from dataclasses import asdict

    from app.inference.model import ReportModel

    started = time.perf_counter()
    model = ReportModel.load(artifact_dir, engine="auto", intra_op_threads=THREADS)
    seconds = time.perf_counter() - started
    choice = model.engine_choice
    assert choice is not None
    return model, {
        "load_seconds": seconds,
        "choice_seconds": choice.startup_s,
        "engine": model.engine.name,
        "device": model.provider,
        "max_batch_tokens": model.max_batch_tokens,
        "passed": choice.passed,
        "reference": choice.reference,
        "candidates": [asdict(m) for m in choice.measurements],
    }


def around_the_model(model: Any, texts: list[str]) -> dict[str, float]:
    """Milliseconds per text that predict() spends outside the engine (tokenisation, padding, softmax, ranking,
    keyword spans): predict's time minus the model calls', at batch 1 and 32, best of 3 passes."""
    model_seconds = [0.0]
    observer = model._on_model_call
    model._on_model_call = lambda _size, seconds: model_seconds.__setitem__(0, model_seconds[0] + seconds)
    result = {}
    try:
        for size in (1, BATCH_SIZE):
            passes = []
            for _ in range(3):
                model_seconds[0] = 0.0
                started = time.perf_counter()
                for start in range(0, len(texts), size):
                    model.predict(texts[start : start + size])
                passes.append((time.perf_counter() - started - model_seconds[0]) / len(texts) * 1000)
            result[f"batch_{size}_ms_per_text"] = min(passes)
    finally:
        model._on_model_call = observer
    return result


def token_budget_sweep(
    artifact_dir: Path, batches: Sequence[list[str]], repeats: int = 2
) -> dict[str, dict[str, float]]:
    """Each artifact engine at batch 32 with other token budgets per call, the best of ``repeats`` passes (a shared
    machine only ever slows a pass down): the basis of its default."""
    ways = {}
    for name, load in artifact_engines(artifact_dir).items():
        engine = load()
        for budget in TOKEN_BUDGETS:
            ways[f"{name}@{budget}"] = _departments(_report_model(artifact_dir, engine, budget))
    timings = measure_interleaved(ways, batches, repeats)
    texts = sum(len(batch) for batch in batches)
    sweep: dict[str, dict[str, float]] = {}
    for key, timing in timings.items():
        engine_name, tokens = key.split("@")
        passes = [timing.seconds[i : i + len(batches)] for i in range(0, len(timing.seconds), len(batches))]
        sweep.setdefault(engine_name, {})[tokens] = texts / min(sum(seconds) for seconds in passes)
    return sweep


# --- the checkpoint family -------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    model: Any  # MultiTaskModel
    tokenizer: Any
    labels: list[str]  # the department ids in the head's order
    source: str
    trained: bool
    text_prefix: str  # what the artifact puts before each text (the checkpoint was trained with it)


def base_encoder_dir(explicit: Path | None) -> Path:
    """The base encoder to time the 12-layer shape with: ``--base``, else the newest 12-layer build in the cache,
    else a build (minutes)."""
    if explicit is not None:
        return explicit
    from training.base_model import default_cache_dir, ensure_base_encoder

    builds = [
        path
        for path in (default_cache_dir() / "base").glob("*")
        if (path / "config.json").is_file()
        and json.loads((path / "config.json").read_text())["num_hidden_layers"] == 12
        and (path / "model.safetensors").is_file()
    ]
    return max(builds, key=lambda path: path.stat().st_mtime) if builds else ensure_base_encoder()


def load_checkpoint_family(run_dir: Path, base: Path | None, manifest: Any) -> Checkpoint:
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    from training.model import MultiTaskModel, load_checkpoint

    if (run_dir / "checkpoint").exists():
        model, tokenizer, labels = load_checkpoint(run_dir)
        return Checkpoint(
            model,
            tokenizer,
            labels.department,
            f"the training run {run_dir}",
            True,
            manifest.tokenizer.text_prefix,
        )
    directory = base_encoder_dir(base)
    torch.manual_seed(0)
    counts = {task: manifest.output_size(task) for task in manifest.tasks}
    model = MultiTaskModel(BertModel.from_pretrained(directory, add_pooling_layer=False), counts).eval()
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    source = f"the base encoder {directory} with random heads ({run_dir} has no checkpoint)"
    return Checkpoint(
        model, tokenizer, manifest.tasks["department"].label_ids, source, False, manifest.tokenizer.text_prefix
    )


def _argmax_way(
    run_batch: Callable[..., dict[str, np.ndarray]], checkpoint: Checkpoint, max_length: int, pad_id: int
) -> Predict:
    from app.artifact import output_name
    from app.inference.tensors import pad_batch
    from training.model import encode_texts

    def predict(texts: list[str]) -> list[str]:
        encoded = encode_texts(checkpoint.tokenizer, texts, max_length, text_prefix=checkpoint.text_prefix)
        outputs = run_batch(*pad_batch(encoded.input_ids, pad_id))
        return [checkpoint.labels[i] for i in outputs[output_name("department")].argmax(axis=-1)]

    return predict


def _ctranslate2_way(checkpoint: Checkpoint, max_length: int, work: Path) -> Predict:
    """The encoder converted to CTranslate2 int8 (embedding rows padded to the tokenizer's size, which the
    converter insists on); mean pooling and the department head in numpy."""
    import ctranslate2
    from transformers import AutoTokenizer

    from training.model import encode_texts

    encoder = copy.deepcopy(checkpoint.model.encoder)
    encoder.config.position_embedding_type = "absolute"
    encoder.save_pretrained(work / "hf")
    checkpoint.tokenizer.save(str(work / "hf" / "tokenizer.json"))
    # The converter wants one embedding row per entry of the vocabulary transformers reads (which counts added
    # special tokens too); rows past the tokenizer's ids are never looked up.
    vocabulary = len(AutoTokenizer.from_pretrained(work / "hf").get_vocab())
    if vocabulary > encoder.config.vocab_size:
        encoder.resize_token_embeddings(vocabulary)
        encoder.save_pretrained(work / "hf")
    ctranslate2.converters.TransformersConverter(str(work / "hf")).convert(
        str(work / "ct2"), quantization="int8", force=True
    )
    runner = ctranslate2.Encoder(str(work / "ct2"), device="cpu", compute_type="int8", intra_threads=THREADS)
    head = checkpoint.model.heads["department"]
    weight, bias = head.weight.detach().numpy().T, head.bias.detach().numpy()

    def predict(texts: list[str]) -> list[str]:
        ids = encode_texts(checkpoint.tokenizer, texts, max_length, text_prefix=checkpoint.text_prefix).input_ids
        hidden = np.asarray(runner.forward_batch(ids).last_hidden_state)
        mask = np.arange(hidden.shape[1]) < np.array([len(row) for row in ids])[:, None]
        pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return [checkpoint.labels[i] for i in (pooled @ weight + bias).argmax(axis=-1)]

    return predict


def checkpoint_ways(checkpoint: Checkpoint, max_length: int, work: Path) -> tuple[dict[str, Way], dict[str, Any]]:
    """PyTorch fp32/bf16, CTranslate2 int8 and OpenVINO bf16 on fp32 and int8 graphs of the same weights, with the
    graphs' sizes (the artifact's precision is decided on these numbers)."""
    import torch

    from app.artifact import MODEL_FILE
    from app.inference.engines import OpenVinoEngine, read_openvino_model
    from training.export import export_onnx, quantise_graph
    from training.model import pad_token_id, torch_runner

    model = checkpoint.model

    def way(run_batch: Callable[..., dict[str, np.ndarray]]) -> Way:
        predict = _argmax_way(run_batch, checkpoint, max_length, pad_token_id(checkpoint.tokenizer))
        return Way("checkpoint", predict)

    ways = {
        "pytorch_fp32": way(torch_runner(model)),
        "pytorch_bf16": way(torch_runner(copy.deepcopy(model).to(torch.bfloat16))),
    }
    notes: dict[str, Any] = {}
    try:
        (work / "ct2").mkdir()
        ways["ctranslate2_int8"] = Way("checkpoint", _ctranslate2_way(checkpoint, max_length, work / "ct2"))
    except Exception as exc:  # a converter that refuses the model is a result to record, not a crash
        notes["ctranslate2_int8_skipped"] = f"{type(exc).__name__}: {exc}"
    fp32_graph, int8_graph = work / "fp32" / MODEL_FILE, work / "int8" / MODEL_FILE
    fp32_graph.parent.mkdir()
    int8_graph.parent.mkdir()
    export_onnx(copy.deepcopy(model), fp32_graph)
    quantise_graph(fp32_graph, int8_graph)
    for name, graph in (("openvino_bf16_fp32_graph", fp32_graph), ("openvino_bf16_int8_graph", int8_graph)):
        engine = OpenVinoEngine.load(read_openvino_model(graph), precision="bf16", threads=THREADS)
        ways[name] = way(engine.run)
    notes["graph_mb"] = {
        "fp32": fp32_graph.stat().st_size / 1e6,
        "fp16_estimate": fp32_graph.stat().st_size / 2e6,
        "int8": int8_graph.stat().st_size / 1e6,
    }
    return ways, notes


# --- measuring -------------------------------------------------------------------------------------------------


def length_sorted_batches(texts: list[str], tokenizer: Any, max_length: int, text_prefix: str) -> list[list[str]]:
    from training.model import encode_texts

    lengths = [len(ids) for ids in encode_texts(tokenizer, texts, max_length, text_prefix=text_prefix).input_ids]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    return [[texts[i] for i in order[start : start + BATCH_SIZE]] for start in range(0, len(order), BATCH_SIZE)]


def summarise(ways: dict[str, Way], timings: dict[str, Timings], texts: int, repeats: int, reference: dict[str, str]):
    """texts/s, latency and department agreement of each way with its family's reference."""
    result = {}
    for name, timing in timings.items():
        against = timings[reference[ways[name].family]].predictions
        agreement = np.mean([a == b for a, b in zip(timing.predictions, against, strict=True)])
        result[name] = {
            "texts_per_s": texts * repeats / sum(timing.seconds),
            "latency_ms": latency_ms(timing.seconds),
            "department_agreement": float(agreement),
            "agreement_with": reference[ways[name].family],
        }
    return result


def targets(ways: dict[str, dict[str, Any]], startup: dict[str, Any], flags: list[str]) -> list[dict[str, Any]]:
    service = ways[SERVICE]
    openvino = [ways[n]["batch_32"]["texts_per_s"] for n in ("openvino_bf16", "openvino_bf16_fp32_graph") if n in ways]
    fastest = max(ways[n]["batch_32"]["texts_per_s"] for n in ways if ways[n]["family"] == "artifact" and n != SERVICE)
    rate_1 = service["batch_1"]["texts_per_s"]
    amx = "amx_bf16" in flags
    result = [
        target(
            "auto_startup_s",
            "auto chooses within 5 s of start-up",
            startup["choice_seconds"],
            startup["choice_seconds"] <= 5,
        ),
        target(
            "service_is_the_fastest_artifact_engine",
            "the service's engine runs >= 90% of the fastest artifact engine at batch 32 (the same run)",
            service["batch_32"]["texts_per_s"] / fastest,
            service["batch_32"]["texts_per_s"] >= 0.9 * fastest,
        ),
        target(
            "service_vs_onnxruntime",
            "never slower than onnxruntime int8 (batch 32 texts/s ratio)",
            service["batch_32"]["texts_per_s"] / ways["onnxruntime"]["batch_32"]["texts_per_s"],
            service["batch_32"]["texts_per_s"] >= 0.95 * ways["onnxruntime"]["batch_32"]["texts_per_s"],
        ),
        target(
            "service_batch_1_texts_per_s",
            "AMX machine: in-process batch-1 >= 250 texts/s (needs the distilled student)",
            rate_1,
            rate_1 >= 250 if amx else None,
        ),
    ]
    if openvino:
        result.append(
            target(
                "openvino_raw_batched_rate",
                "OpenVINO bf16 batch-32 rate on the 12-layer shape (what the served rate is held to)",
                max(openvino),
                None,
            )
        )
    return result


def run_engines_bench(
    *, artifact_dir: Path, run_dir: Path, base: Path | None, texts_path: Path, batch1_texts: int, repeats: int
) -> dict[str, Any]:
    import torch
    from tokenizers import Tokenizer

    from app.artifact import TOKENIZER_FILE, read_manifest

    require(artifact_dir / "manifest.json", "the exported artifact")
    torch.set_num_threads(THREADS)
    texts = read_texts(texts_path)
    manifest = read_manifest(artifact_dir)
    max_length = manifest.tokenizer.max_length
    service, startup = auto_startup(artifact_dir)
    ways: dict[str, Way] = {
        name: Way("artifact", _departments(_report_model(artifact_dir, load())))
        for name, load in artifact_engines(artifact_dir).items()
    }
    ways[SERVICE] = Way("artifact", _departments(service))
    checkpoint = load_checkpoint_family(run_dir, base, manifest)
    with tempfile.TemporaryDirectory() as tmp:
        more, notes = checkpoint_ways(checkpoint, max_length, Path(tmp))
        ways |= more
        artifact_tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
        batches = length_sorted_batches(texts, artifact_tokenizer, max_length, manifest.tokenizer.text_prefix)
        predictors = {name: way.predict for name, way in ways.items()}
        single = measure_interleaved(predictors, [[text] for text in texts[:batch1_texts]], 1)
        batched = measure_interleaved(predictors, batches, repeats)
        sweep = token_budget_sweep(artifact_dir, batches)
        around = around_the_model(service, texts)
    # The same weights in both families when the run is the artifact's: then PyTorch fp32 is everyone's reference.
    reference = {"checkpoint": CHECKPOINT_REFERENCE}
    reference["artifact"] = CHECKPOINT_REFERENCE if checkpoint.trained else ARTIFACT_REFERENCE
    by_mode = {
        "batch_1": summarise(ways, single, min(batch1_texts, len(texts)), 1, reference),
        "batch_32": summarise(ways, batched, len(texts), repeats, reference),
    }
    rows = {
        name: {"description": DESCRIPTIONS[name], "family": way.family} | {mode: by_mode[mode][name] for mode in MODES}
        for name, way in ways.items()
    }
    machine = machine_info()
    machine["packages"] |= _engine_packages()
    return {
        "machine": machine,
        "setup": {
            "artifact": str(artifact_dir),
            "artifact_version": manifest.model_version,
            "checkpoint": checkpoint.source,
            "texts": str(texts_path),
            "batch_1_texts": min(batch1_texts, len(texts)),
            "batch_32_texts": len(texts),
            "batch_32_repeats": repeats,
            "max_length": max_length,
            "threads": THREADS,
        },
        "auto_startup": startup,
        "ways": rows,
        "token_budget_sweep": sweep,
        "around_the_model": around,
        "notes": notes,
        "targets": targets(rows, startup, machine["cpu"]["flags"]),
    }


def _engine_packages() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("openvino", "ctranslate2"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="the exported artifact")
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="its training run (when present)")
    parser.add_argument("--base", type=Path, default=None, help="base encoder directory (default: the cache's)")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="JSONL reports (the test split)")
    parser.add_argument("--batch1-texts", type=int, default=100, help="texts timed one at a time")
    parser.add_argument("--repeats", type=int, default=2, help="passes over all texts at batch 32")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "engines.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run_engines_bench(
        artifact_dir=args.artifact,
        run_dir=args.run,
        base=args.base,
        texts_path=args.texts,
        batch1_texts=args.batch1_texts,
        repeats=args.repeats,
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
