"""Bulk classification of an archive (`kommunrouter classify FILE`) against the engine's raw batched rate.

    python -m bench.bulk_classify [--rows 100000] [--artifact models/default] [--window 512]

Writes an archive as a Swedish municipality's Excel export would be (Windows-1252, semicolons, columns Ärendenr;
Beskrivning): the bundled reports repeated with variations (greetings, sign-offs, other house numbers). Then, in
one process, on one loaded model:

1. the raw rate: the loaded model's ``ReportModel.predict`` on windows of texts already in memory
   (length-sorted model calls within the token budget, full decoding), over a sample of the archive's texts;
2. ``classify_file`` with the same loaded classifier on the whole archive (reading, decoding, checks, the same
   model calls, the service's decision and answer, JSONL writing), while a thread samples resident memory;
3. the raw rate again (the shared machine drifts: the bulk rate is compared with the mean of both).

Targets: the bulk rate at least 90% of the raw rate, memory growth during the run under 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.bulk import DEFAULT_WINDOW, classify_file
from app.config import Settings
from app.inference.classifier import load_classifier
from app.inference.model import ModelPrediction, ReportModel
from bench.measure import DEFAULT_ARTIFACT, RESULTS_DIR, THREADS, machine_info, require, target, write_result

REPORTS = (Path("data/reports/train.jsonl"), Path("data/reports/dev.jsonl"), Path("data/reports/test.jsonl"))
GREETINGS = ("", "Hej! ", "Hej, ", "Hejsan. ", "God dag. ", "Till kommunen: ")
SIGN_OFFS = ("", " Mvh Anna", " Tack på förhand!", " Hälsningar, en boende", " Snälla åtgärda snarast.")
RATE_TARGET = 0.90
MEMORY_TARGET_MB = 200.0
SAMPLE_SECONDS = 0.2


def lscpu_flags() -> list[str]:
    """The CPU features that decide which kernels run (AVX-512 VNNI for int8, AVX-512 BF16 and AMX)."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    flags = next((line.split(":", 1)[1].split() for line in output.splitlines() if line.startswith("Flags")), [])
    return sorted(flag for flag in flags if flag.startswith(("avx512_vnni", "avx512_bf16", "amx")))


def archive_texts() -> list[str]:
    """The bundled reports that Windows-1252 can hold (a few have characters it cannot)."""
    texts = []
    for path in REPORTS:
        require(path, "the bundled reports")
        for line in path.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            try:
                text.encode("cp1252")
            except UnicodeEncodeError:
                continue
            texts.append(text)
    return texts


def vary(text: str, variant: int, rng: random.Random) -> str:
    """Another resident's version of a report: a greeting, a sign-off, other house numbers."""
    text = re.sub(r"\d+", lambda match: str((int(match.group()) + variant) % 150 + 1), text) if variant else text
    return f"{GREETINGS[variant % len(GREETINGS)]}{text}{SIGN_OFFS[rng.randrange(len(SIGN_OFFS))]}"


def write_archive(path: Path, rows: int, sample_size: int, seed: int = 13) -> list[str]:
    """An Excel-style export of ``rows`` reports; returns an evenly spaced sample of its texts for the raw rate."""
    texts = archive_texts()
    rng = random.Random(seed)
    step = max(1, rows // sample_size)
    sample: list[str] = []
    with path.open("w", encoding="cp1252", newline="") as handle:
        handle.write("Ärendenr;Beskrivning\r\n")
        for number in range(rows):
            text = vary(texts[number % len(texts)], number // len(texts), rng)
            if number % step == 0 and len(sample) < sample_size:
                sample.append(text)
            quoted = '"' + text.replace('"', '""') + '"'
            handle.write(f"KS-{number + 1:07d};{quoted}\r\n")
    return sample


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6


class TimedModel:
    """Adds up the time the bulk run spends inside the engine (``predict``: tokenise, model calls, decode)."""

    def __init__(self, model: ReportModel) -> None:
        self.seconds = 0.0
        self.texts = 0
        self._predict = model.predict
        model.predict = self  # type: ignore[method-assign]

    def __call__(self, texts: Sequence[str]) -> list[ModelPrediction]:
        started = time.perf_counter()
        predictions = self._predict(texts)
        self.seconds += time.perf_counter() - started
        self.texts += len(texts)
        return predictions

    def restore(self, model: ReportModel) -> None:
        model.predict = self._predict  # type: ignore[method-assign]


class MemorySampler(threading.Thread):
    """The largest resident set size seen while the bulk run goes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_mb()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_mb())


def raw_rate(model: ReportModel, texts: list[str], window: int) -> dict[str, float]:
    """Texts/s of the engine alone: predict() on windows of in-memory texts, as the bulk run calls it."""
    model.predict(texts[:window])  # warm-up: the first calls of a session are slower
    started = time.perf_counter()
    for start in range(0, len(texts), window):
        model.predict(texts[start : start + window])
    seconds = time.perf_counter() - started
    return {"texts": len(texts), "seconds": round(seconds, 2), "texts_per_s": round(len(texts) / seconds, 2)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="Reports in the archive.")
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="The model artifact.")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="Rows per window (classify --window).")
    parser.add_argument("--raw-texts", type=int, default=1024, help="Texts of the raw rate, before and after.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "bulk_classify.json")
    args = parser.parse_args(argv)
    require(args.artifact / "manifest.json", "the model artifact")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    settings = Settings(model_dir=args.artifact, intra_op_threads=THREADS)
    result: dict[str, Any] = {"machine": machine_info() | {"lscpu_flags": lscpu_flags()}}
    with tempfile.TemporaryDirectory(prefix="bulk_classify_") as work:
        archive, out = Path(work) / "arkiv.csv", Path(work) / "resultat.jsonl"
        sample = write_archive(archive, args.rows, args.raw_texts)
        print(f"archive: {args.rows:,} rows, {archive.stat().st_size / 1e6:.1f} MB; raw rate on {len(sample)} texts")
        classifier = load_classifier(settings)
        before = raw_rate(classifier.model, sample, args.window)
        print(f"raw before: {before['texts_per_s']} texts/s")
        baseline = rss_mb()
        load_during = os.getloadavg()[0]
        timed = TimedModel(classifier.model)
        sampler = MemorySampler()
        sampler.start()
        summary = classify_file(
            archive,
            out=out,
            text_column="Beskrivning",
            id_column="Ärendenr",
            settings=settings,
            window=args.window,
            progress=False,
            classifier=classifier,
        )
        peak = sampler.stop()
        timed.restore(classifier.model)
        end = rss_mb()
        written = sum(1 for _ in out.open(encoding="utf-8"))
        after = raw_rate(classifier.model, sample, args.window)
        print(f"{summary.describe()}\nraw after: {after['texts_per_s']} texts/s")
    bulk_rate = summary.classified / summary.seconds
    raw_mean = (before["texts_per_s"] + after["texts_per_s"]) / 2
    # The engine's rate on the same texts at the same moments: immune to the shared machine's drift.
    engine_rate = timed.texts / timed.seconds
    share = bulk_rate / engine_rate
    growth = peak - baseline
    result |= {
        "setup": {
            "rows": args.rows,
            "window": args.window,
            "threads": THREADS,
            "max_batch_tokens": settings.max_batch_tokens,
            "artifact": str(args.artifact),
            "input": "Windows-1252, ';', Ärendenr;Beskrivning: the bundled reports repeated with variations",
            "read_as": summary.read_as,
        },
        "raw_before": before,
        "raw_after": after,
        "engine_in_run": {
            "texts": timed.texts,
            "seconds": round(timed.seconds, 1),
            "texts_per_s": round(engine_rate, 2),
            "note": "time inside ReportModel.predict during the bulk run (tokenise, model calls, decode)",
        },
        "bulk": {
            "classified": summary.classified,
            "errors": dict(summary.errors),
            "records_written": written,
            "seconds": round(summary.seconds, 1),
            "texts_per_s": round(bulk_rate, 2),
            "share_of_engine_rate_in_run": round(share, 3),
            "share_of_raw_rate_before_after": round(bulk_rate / raw_mean, 3),
            "load_average_1m_at_start": round(load_during, 2),
        },
        "memory_mb": {
            "baseline_rss": round(baseline, 1),
            "peak_rss": round(peak, 1),
            "end_rss": round(end, 1),
            "growth_peak": round(growth, 1),
        },
        "targets": [
            target(
                "bulk rate / engine's batched rate on the same texts in the same run",
                f">= {RATE_TARGET:.0%}",
                round(share, 3),
                share >= RATE_TARGET,
            ),
            target("memory growth (MB)", f"< {MEMORY_TARGET_MB:.0f}", round(growth, 1), growth < MEMORY_TARGET_MB),
        ],
    }
    write_result(args.out, result)
    print(
        f"bulk {bulk_rate:.1f} texts/s = {share:.1%} of the engine's {engine_rate:.1f} in the run "
        f"({bulk_rate / raw_mean:.1%} of the raw {raw_mean:.1f} before/after); memory growth {growth:.1f} MB"
    )


if __name__ == "__main__":
    main()
