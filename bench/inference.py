"""The same fine-tuned weights run four ways on the same test texts, side by side in one process, and the
machine's limit for this model.

(a) transformers + PyTorch eager fp32, the way a user runs a checkpoint by default: texts in test-split order,
    each batch padded to its longest text; (b) the same in bf16; (c) onnxruntime fp32 on the graph exported from
    the same checkpoint, not optimised; (d) the exported artifact run the way the service runs it
    (``app.inference.model.ReportModel.predict``: NFC, length-sorted calls within a token budget, full decoding).
Every way takes texts and returns department ids; calls are interleaved (each text or batch goes through all
four ways in a rotating order) so that drift of a shared machine hits every way alike.

The machine's limit: GEMM throughput (fp32, bf16, int8) divided by the model's FLOPs per text gives the most
texts per second any implementation could reach; the result reports the share of it that (d) reaches.

    python -m bench.inference [--run runs/default] [--artifact models/default]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
# The best of this many runs of each GEMM is the machine's rate (a shared machine only ever slows a run down).
GEMM_REPEATS = 10
MODES = ("batch_1", "batch_32")
# Values of the service's max_batch_tokens tried on (d) at batch 32.
TOKEN_BUDGETS = (128, 256, 512, 1024, 4096)
# Texts -> department label ids: the one interface every way is measured through.
Predict = Callable[[list[str]], list[str]]

WAYS = {
    "a_pytorch_fp32": "transformers + PyTorch eager fp32: batches in test-split order, padded to their longest text",
    "b_pytorch_bf16": "the same PyTorch model cast to bfloat16 (model.to(torch.bfloat16))",
    "c_onnxruntime_fp32": "onnxruntime fp32, the graph exported from the same checkpoint (not optimised)",
    "d_kommunrouter": "the exported artifact through the service's ReportModel.predict (length-sorted calls, "
    "full decoding of all four tasks)",
}
REFERENCE = "a_pytorch_fp32"
SERVICE_WAY = "d_kommunrouter"


def checkpoint_way(
    run_batch: Callable[..., dict[str, np.ndarray]], tokenizer: Any, labels: Any, max_length: int, text_prefix: str
) -> Predict:
    """Tokenise, pad to the longest text of the batch, run, take the department argmax."""
    from app.artifact import output_name
    from app.inference.tensors import pad_batch
    from training.model import encode_texts, pad_token_id

    pad_id = pad_token_id(tokenizer)

    def predict(texts: list[str]) -> list[str]:
        encoded = encode_texts(tokenizer, texts, max_length, text_prefix=text_prefix)
        outputs = run_batch(*pad_batch(encoded.input_ids, pad_id))
        return [labels.department[i] for i in outputs[output_name("department")].argmax(axis=-1)]

    return predict


def service_way(artifact_dir: Path, max_batch_tokens: int | None = None) -> Predict:
    """The artifact loaded and run as the service does: its settings (KOMMUNROUTER_*), or another token budget."""
    from app.config import Settings
    from app.inference.model import ReportModel

    model = ReportModel.load(
        artifact_dir,
        execution_provider="cpu",
        intra_op_threads=THREADS,
        max_batch_tokens=max_batch_tokens or Settings().max_batch_tokens,
    )
    return lambda texts: [prediction.department[0].label for prediction in model.predict(texts)]


def token_budget_sweep(
    artifact_dir: Path, batches: Sequence[list[str]], repeats: int, budgets: Sequence[int]
) -> dict[str, Any]:
    """(d)'s batch-32 throughput for other values of the service's max_batch_tokens: how finely a batch is cut
    into length-sorted model calls decides how much padding is computed."""
    from app.config import Settings

    ways = {str(budget): service_way(artifact_dir, budget) for budget in budgets}
    timings = measure_interleaved(ways, batches, repeats)
    texts = sum(len(batch) for batch in batches) * repeats
    return {
        "service_setting": Settings().max_batch_tokens,
        "texts_per_s": {budget: texts / sum(timing.seconds) for budget, timing in timings.items()},
    }


@dataclass
class LoadedWays:
    ways: dict[str, Predict]
    model: Any  # the fp32 MultiTaskModel, for its FLOPs
    token_counts: list[int]
    artifact_version: str


def load_ways(run_dir: Path, artifact_dir: Path, texts: list[str], work: Path) -> LoadedWays:
    import torch

    from app.artifact import read_manifest
    from app.inference.session import create_session
    from training.evaluate import onnx_runner
    from training.export import export_onnx
    from training.model import encode_texts, load_checkpoint, torch_runner
    from training.run_dir import RunDir

    model, tokenizer, labels = load_checkpoint(run_dir)
    config = RunDir(run_dir).config()
    max_length, prefix = config.max_length, config.text_prefix
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    graph = work / "fp32.onnx"
    # export_onnx switches its model to eager attention; a copy keeps (a) as a user loads it.
    export_onnx(copy.deepcopy(model), graph)
    ways = {
        "a_pytorch_fp32": checkpoint_way(torch_runner(model), tokenizer, labels, max_length, prefix),
        "b_pytorch_bf16": checkpoint_way(torch_runner(bf16), tokenizer, labels, max_length, prefix),
        "c_onnxruntime_fp32": checkpoint_way(
            onnx_runner(create_session(graph, intra_op_threads=THREADS)), tokenizer, labels, max_length, prefix
        ),
        "d_kommunrouter": service_way(artifact_dir),
    }
    token_counts = [len(ids) for ids in encode_texts(tokenizer, texts, max_length, text_prefix=prefix).input_ids]
    return LoadedWays(ways, model, token_counts, read_manifest(artifact_dir).model_version)


@dataclass
class Timings:
    """Seconds of every call of one way, and its predictions of the first pass (in text order)."""

    seconds: list[float] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)


def measure_interleaved(ways: dict[str, Predict], batches: Sequence[list[str]], repeats: int) -> dict[str, Timings]:
    """Every batch through every way, the order of the ways rotating from call to call."""
    names = list(ways)
    for batch in batches[:2]:  # warm-up: first-call allocations and lazy initialisation
        for name in names:
            ways[name](batch)
    timings = {name: Timings() for name in names}
    for repeat in range(repeats):
        for index, batch in enumerate(batches):
            shift = (repeat * len(batches) + index) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                predictions = ways[name](batch)
                timings[name].seconds.append(time.perf_counter() - started)
                if repeat == 0:
                    timings[name].predictions += predictions
    return timings


def summarise(timings: dict[str, Timings], texts_per_pass: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Texts per second, call latency, department agreement and ratios, each way against (a)."""
    reference = timings[REFERENCE]
    result: dict[str, dict[str, Any]] = {}
    for name, timing in timings.items():
        latency = latency_ms(timing.seconds)
        agreement = np.mean([p == r for p, r in zip(timing.predictions, reference.predictions, strict=True)])
        result[name] = {"texts_per_s": texts_per_pass * repeats / sum(timing.seconds), "latency_ms": latency}
        result[name]["department_agreement_with_a"] = float(agreement)
    for name in timings:
        result[name]["texts_per_s_ratio_to_a"] = result[name]["texts_per_s"] / result[REFERENCE]["texts_per_s"]
        result[name]["p50_speedup_over_a"] = result[REFERENCE]["latency_ms"]["p50"] / result[name]["latency_ms"]["p50"]
    return result


def _best_and_median(run: Callable[[], object], flops: float, repeats: int) -> dict[str, float]:
    run()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return {"gflops_best": flops / min(seconds) / 1e9, "gflops_median": flops / float(np.median(seconds)) / 1e9}


def _onnxruntime_int8_gemm(size: int, work: Path) -> Callable[[], object]:
    """MatMulInteger with uint8 activations and int8 weights: the kernel of dynamically quantised graphs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from app.inference.session import create_session
    from training.export import OPSET

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])],
        initializer=[weights],
    )
    path = work / "int8_gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(path))
    session = create_session(path, intra_op_threads=THREADS)
    activations = rng.integers(0, 256, (size, size), dtype=np.uint8)
    return lambda: session.run(["y"], {"a": activations})


def gemm_throughput(size: int, repeats: int, work: Path) -> dict[str, dict[str, Any]]:
    """GFLOP/s of a square GEMM per precision (2*size^3 operations), on THREADS threads."""
    import torch

    flops = 2.0 * size**3
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    a16, b16 = a.bfloat16(), b.bfloat16()
    result: dict[str, dict[str, Any]] = {
        "fp32": _best_and_median(lambda: torch.matmul(a, b), flops, repeats) | {"how": "torch.matmul fp32"},
        "bf16": _best_and_median(lambda: torch.matmul(a16, b16), flops, repeats) | {"how": "torch.matmul bfloat16"},
        "int8_onnxruntime": _best_and_median(_onnxruntime_int8_gemm(size, work), flops, repeats)
        | {"how": "onnxruntime MatMulInteger uint8 x int8"},
    }
    if hasattr(torch, "_int_mm"):
        a8 = torch.randint(-127, 128, (size, size), dtype=torch.int8, generator=generator)
        b8 = torch.randint(-127, 128, (size, size), dtype=torch.int8, generator=generator)
        result["int8_torch"] = _best_and_median(lambda: torch._int_mm(a8, b8), flops, repeats) | {
            "how": "torch._int_mm int8 x int8"
        }
    for value in result.values():
        value["size"] = size
    return result


def model_flops(model: Any, token_counts: Sequence[int]) -> dict[str, Any]:
    """FLOPs of one text: 2 x (per-token parameters outside the embeddings) x tokens, plus the attention
    products 4 x layers x tokens^2 x hidden, plus the per-text heads; averaged over the texts."""
    from app.artifact import SPAN_TASK

    config = model.encoder.config
    per_token = sum(p.numel() for p in model.encoder.encoder.parameters())
    per_token += sum(p.numel() for p in model.heads[SPAN_TASK].parameters())
    per_text = sum(p.numel() for task, head in model.heads.items() if task != SPAN_TASK for p in head.parameters())
    layers, hidden = config.num_hidden_layers, config.hidden_size

    def flops(tokens: int) -> float:
        return 2.0 * per_token * tokens + 2.0 * per_text + 4.0 * layers * tokens**2 * hidden

    batches = [token_counts[start : start + BATCH_SIZE] for start in range(0, len(token_counts), BATCH_SIZE)]
    return {
        "flops_per_text": float(np.mean([flops(t) for t in token_counts])),
        "mean_tokens": float(np.mean(token_counts)),
        "max_tokens": max(token_counts),
        "parameters_per_token": per_token,
        "layers": layers,
        "hidden": hidden,
        # What (a)-(c) compute at batch 32: every text padded to the longest of its batch in test order.
        "padded_flops_per_text_batch_32_test_order": sum(flops(max(b)) * len(b) for b in batches) / len(token_counts),
        "padding_share_batch_32_test_order": 1 - sum(token_counts) / sum(max(b) * len(b) for b in batches),
    }


def machine_limit(
    gemm: dict[str, dict[str, Any]], flops: dict[str, Any], service: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Per precision: the best GEMM rate, the ceiling in texts/s it gives (rate / FLOPs per text) and the
    share of it that (d) reaches at batch 1 and 32. int8 takes the faster of the int8 GEMMs."""
    sources = {"fp32": "fp32", "bf16": "bf16"}
    sources["int8"] = max((k for k in gemm if k.startswith("int8")), key=lambda k: gemm[k]["gflops_best"])
    ceilings = {}
    for precision, source in sources.items():
        texts_per_s = gemm[source]["gflops_best"] * 1e9 / flops["flops_per_text"]
        ceilings[precision] = {
            "gemm": source,
            "gflops": gemm[source]["gflops_best"],
            "texts_per_s": texts_per_s,
            **{f"d_share_{mode}": service[mode]["texts_per_s"] / texts_per_s for mode in MODES},
        }
    return {"gemm": gemm, "model": flops, "ceilings": ceilings}


def targets(ways: dict[str, dict[str, Any]], limit: dict[str, Any]) -> list[dict[str, Any]]:
    d = ways[SERVICE_WAY]
    agreement = min(d[mode]["department_agreement_with_a"] for mode in MODES)
    share = limit["ceilings"]["fp32"]["d_share_batch_32"]
    speedup_1, speedup_32 = d["batch_1"]["texts_per_s_ratio_to_a"], d["batch_32"]["texts_per_s_ratio_to_a"]
    return [
        target("d_speedup_batch_1", "(d) >= 4x (a) texts/s at batch 1", speedup_1, speedup_1 >= 4),
        target("d_speedup_batch_32", "(d) >= 3x (a) texts/s at batch 32", speedup_32, speedup_32 >= 3),
        target("d_department_agreement", "(d) department agreement with (a) >= 99%", agreement, agreement >= 0.99),
        target("d_share_of_fp32_ceiling", "(d) batched >= 50% of the fp32 ceiling", share, share >= 0.5),
    ]


def run_inference_bench(
    *, run_dir: Path, artifact_dir: Path, texts_path: Path, batch1_texts: int, repeats: int, gemm_size: int
) -> dict[str, Any]:
    import torch

    require(run_dir / "checkpoint", "the fine-tuned checkpoint")
    require(artifact_dir / "manifest.json", "the exported artifact")
    torch.set_num_threads(THREADS)
    texts = read_texts(texts_path)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_ways(run_dir, artifact_dir, texts, Path(tmp))
        single = measure_interleaved(loaded.ways, [[text] for text in texts[:batch1_texts]], 1)
        batches = [texts[start : start + BATCH_SIZE] for start in range(0, len(texts), BATCH_SIZE)]
        batched = measure_interleaved(loaded.ways, batches, repeats)
        sweep = token_budget_sweep(artifact_dir, batches, repeats, TOKEN_BUDGETS)
        gemm = gemm_throughput(gemm_size, GEMM_REPEATS, Path(tmp))
    by_mode = {
        "batch_1": summarise(single, min(batch1_texts, len(texts)), 1),
        "batch_32": summarise(batched, len(texts), repeats),
    }
    ways: dict[str, dict[str, Any]] = {
        name: {"description": description} | {mode: by_mode[mode][name] for mode in by_mode}
        for name, description in WAYS.items()
    }
    limit = machine_limit(gemm, model_flops(loaded.model, loaded.token_counts), ways[SERVICE_WAY])
    return {
        "machine": machine_info(),
        "setup": {
            "run": str(run_dir),
            "artifact": str(artifact_dir),
            "artifact_version": loaded.artifact_version,
            "pytorch_attention": loaded.model.encoder.config._attn_implementation,
            "texts": str(texts_path),
            "batch_1_texts": min(batch1_texts, len(texts)),
            "batch_32_texts": len(texts),
            "batch_32_repeats": repeats,
            "threads": THREADS,
        },
        "ways": ways,
        "d_token_budget_sweep": sweep,
        "machine_limit": limit,
        "targets": targets(ways, limit),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="training run with the checkpoint")
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="exported artifact (d)")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="JSONL reports (the test split)")
    parser.add_argument("--batch1-texts", type=int, default=100, help="texts timed one at a time")
    parser.add_argument("--repeats", type=int, default=3, help="passes over all texts at batch 32")
    parser.add_argument("--gemm-size", type=int, default=2048, help="side of the square GEMMs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "inference.json")
    args = parser.parse_args(argv)
    result = run_inference_bench(
        run_dir=args.run,
        artifact_dir=args.artifact,
        texts_path=args.texts,
        batch1_texts=args.batch1_texts,
        repeats=args.repeats,
        gemm_size=args.gemm_size,
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
