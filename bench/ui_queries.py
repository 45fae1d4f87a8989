"""The staff pages with a large audit log: fill 100,000 decisions, time the queue and insights pages.

For SQLite (a file) and PostgreSQL (a throwaway database ``kommunrouter_uibench_<pid>``, dropped after), the log
is migrated and filled with decisions spread over the last 365 days (about 270 a day: a large municipality's
year), made from the bundled reports with their gold labels: 15% need review, a fifth of the rest were reviewed
(one in ten of those corrected). Then the pages are fetched through the app itself (httpx over ASGI, open access,
models/default), so each time covers the queries, the view models, the SVG and the template. Every page is
fetched once to warm up (after ``VACUUM ANALYZE`` on PostgreSQL, ``ANALYZE`` on SQLite) and then ``--repeats``
times; the median and the slowest are recorded.

    python bench/ui_queries.py [--decisions 100000] [--repeats 7] [--out bench/results/ui_queries.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.audit.database import make_engine, upgrade_database  # noqa: E402
from app.audit.models import Decision, Feedback  # noqa: E402
from app.audit.repository import DecisionRecord, insert_decisions  # noqa: E402
from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from bench.measure import DEFAULT_ARTIFACT, RESULTS_DIR, machine_info, require  # noqa: E402

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
TARGET_MS = 300.0
DAYS = 365
CHUNK = 5000
PAGES = {
    "queue, first page": "/ui/",
    "queue, page 20": "/ui/?sida=20",
    "queue, one department": "/ui/?department=vatten_avlopp",
    "queue, one severity": "/ui/?severity=akut",
    "insights, 30 days (default)": "/ui/insights",
    "insights, 90 days": "/ui/insights?days=90",
    "insights, 365 days": "/ui/insights?days=365",
}
DEPARTMENTS = [
    "gata_park",
    "trafik_parkering",
    "vatten_avlopp",
    "avfall",
    "miljo_halsa",
    "bygg",
    "skola",
    "omsorg",
    "kultur_fritid",
    "kommun_ovrigt",
]


def bundled_reports() -> list[dict[str, Any]]:
    reports = []
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        path = Path("data/reports") / name
        reports += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return reports


def decisions(count: int, rng: random.Random, now: datetime) -> Iterator[tuple[DecisionRecord, bool, str | None]]:
    """Decision records, whether a reviewer judged each, and the department the reviewer gave (None: confirmed)."""
    reports = bundled_reports()
    for number in range(count):
        report = rng.choice(reports)
        needs_review = rng.random() < 0.15
        department = report["department"] if rng.random() < 0.9 else rng.choice(DEPARTMENTS)
        alternatives = [label for label in DEPARTMENTS if label != department]
        record = DecisionRecord(
            request_id=str(uuid.UUID(int=rng.getrandbits(128))),
            created_at=now - timedelta(seconds=rng.uniform(60, DAYS * 86400)),
            client="bench",
            case_id=f"KS-{number:06d}",
            model_version="bench",
            artifact_sha256="0" * 64,
            text=report["text"],
            department=department,
            department_score=rng.uniform(0.3, 0.7) if needs_review else rng.uniform(0.7, 1.0),
            department_alternatives=[{"label": label, "score": 0.05} for label in rng.sample(alternatives, 3)],
            sentiment=report["sentiment"],
            sentiment_score=0.8,
            severity=report["severity"],
            severity_score=0.7,
            keywords=[keyword | {"score": 0.9} for keyword in report["keywords"]],
            needs_review=needs_review,
            routed_to=department,
            latency_ms=20.0,
        )
        reviewed = not needs_review and rng.random() < 0.2
        correction = report["department"] if reviewed and report["department"] != department else None
        yield record, reviewed, correction


def fill(url: str, count: int) -> float:
    """Fill the log; returns the seconds it took."""
    started = time.perf_counter()
    rng = random.Random(19)
    now = datetime.now(UTC)
    engine = make_engine(url)
    batch: list[tuple[DecisionRecord, bool, str | None]] = []

    def flush() -> None:
        with Session(engine) as session, session.begin():
            insert_decisions(session, records=[record for record, _, _ in batch], text_storage="redacted")
            feedback = [
                {
                    "request_id": record.request_id,
                    "created_at": record.created_at + timedelta(hours=2),
                    "client": "bench",
                    "reviewer": "granskare",
                    "department": correction,
                }
                for record, reviewed, correction in batch
                if reviewed
            ]
            if feedback:
                session.execute(insert(Feedback), feedback)
        batch.clear()

    for item in decisions(count, rng, now):
        batch.append(item)
        if len(batch) == CHUNK:
            flush()
    if batch:
        flush()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            # What autovacuum does to a log after a bulk load: statistics, and the visibility map that lets the
            # covering indexes answer without reading the table.
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


async def time_pages(url: str, repeats: int) -> dict[str, dict[str, Any]]:
    settings = Settings(model_dir=DEFAULT_ARTIFACT, database_url=url, open_access=True, intra_op_threads=1)
    app = create_app(settings)
    results: dict[str, dict[str, Any]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for name, path in PAGES.items():
                first = await client.get(path)
                first.raise_for_status()
                seconds = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    answer = await client.get(path)
                    seconds.append(time.perf_counter() - started)
                    answer.raise_for_status()
                median_ms = statistics.median(seconds) * 1000
                results[name] = {
                    "path": path,
                    "median_ms": round(median_ms, 1),
                    "max_ms": round(max(seconds) * 1000, 1),
                    "bytes": len(answer.content),
                    "within_target": median_ms <= TARGET_MS,
                }
                print(f"  {name:32s} median {median_ms:7.1f} ms  max {max(seconds) * 1000:7.1f} ms", flush=True)
    return results


def count_rows(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with Session(engine) as session:
        counts = {
            "decisions": session.scalar(select(func.count()).select_from(Decision)) or 0,
            "feedback": session.scalar(select(func.count()).select_from(Feedback)) or 0,
            "open_in_queue": session.scalar(
                select(func.count()).where(Decision.needs_review.is_(True), ~Decision.feedback.any())
            )
            or 0,
        }
    engine.dispose()
    return counts


def run_backend(url: str, count: int, repeats: int) -> dict[str, Any]:
    upgrade_database(url)
    fill_s = fill(url, count)
    print(f"  filled {count} decisions in {fill_s:.0f} s", flush=True)
    return {"fill_seconds": round(fill_s, 1), "rows": count_rows(url), "pages": asyncio.run(time_pages(url, repeats))}


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"kommunrouter_uibench_{os.getpid()}"
    admin = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ui_queries.json")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    require(DEFAULT_ARTIFACT / "manifest.json", "the model the pages read their taxonomy from")
    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite", flush=True)
        backends["sqlite"] = run_backend(f"sqlite:///{tmp}/audit.db", args.decisions, args.repeats)
    if args.skip_postgres:
        backends["postgresql"] = {"skipped": "--skip-postgres"}
    else:
        print("PostgreSQL", flush=True)
        try:
            with postgres_database() as url:
                backends["postgresql"] = run_backend(url, args.decisions, args.repeats)
        except Exception as exc:  # the server is down: record it, the SQLite half still counts
            backends["postgresql"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    result = {
        "what": "staff pages (queue, insights) through the app with a filled audit log; ms per page",
        "decisions": args.decisions,
        "days": DAYS,
        "repeats": args.repeats,
        "target_ms": TARGET_MS,
        "backends": backends,
        "machine": machine_info(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
