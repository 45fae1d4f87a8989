"""Screenshots of the staff pages for the README (docs/img/staff_queue.png, docs/img/staff_insights.png).

Serves models/default on a free port (open access, a fresh SQLite log in a temporary directory), classifies the
bundled test and dev reports through ``POST /v1/classify``, spreads their times over the last four weeks (as if
they had come in over a month), has a reviewer confirm or correct half of the decisions by their gold labels
through ``POST /v1/feedback``, then photographs the pages with headless Chromium.

    python docs/screenshots.py            (needs the `chromium` and `chromium-driver` Debian packages)
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.audit.database import make_engine, upgrade_database  # noqa: E402
from app.audit.models import Decision  # noqa: E402
from app.config import Settings  # noqa: E402
from tests.browser import chromium_driver, live_service  # noqa: E402

logger = logging.getLogger("screenshots")
OUT = REPO / "docs" / "img"
DAYS = 28


def load_reports() -> list[dict]:
    lines = []
    for name in ("test.jsonl", "dev.jsonl"):
        lines += (REPO / "data" / "reports" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def spread_over_days(database_url: str, request_ids: list[str], rng: random.Random) -> None:
    """Give the decisions times over the last DAYS days, office hours more often than nights."""
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        for request_id in request_ids:
            day = rng.randrange(DAYS)
            hour = rng.choice([7, 8, 9, 10, 11, 13, 14, 15, 16, 19, 21, 23])
            moment = (now - timedelta(days=day)).replace(hour=hour, minute=rng.randrange(60))
            moment = min(moment, now - timedelta(minutes=rng.randrange(5, 300)))
            session.execute(update(Decision).where(Decision.id == request_id).values(created_at=moment))
    engine.dispose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    rng = random.Random(19)
    reports = load_reports()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/audit.db"
        upgrade_database(url)
        settings = Settings(model_dir=REPO / "models" / "default", database_url=url, open_access=True)
        with live_service(settings) as base, httpx.Client(base_url=base, timeout=60) as client:
            answers = []
            for number, report in enumerate(reports):
                case_id = f"KS-2026-{4100 + number:05d}"
                answer = client.post("/v1/classify", json={"text": report["text"], "case_id": case_id})
                answer.raise_for_status()
                answers.append((report, answer.json()))
            logger.info("classified %d reports", len(answers))
            spread_over_days(url, [answer["request_id"] for _, answer in answers], rng)
            # Reviewers judged about half of the confident decisions, by the reports' gold labels; the queue
            # keeps the decisions that need review.
            for report, answer in answers:
                if answer["needs_review"] or rng.random() < 0.5:
                    continue
                body: dict = {"request_id": answer["request_id"], "reviewer": rng.choice(["anna.k", "olle.s"])}
                if report["department"] != answer["department"]["label"]:
                    body["department"] = report["department"]
                client.post("/v1/feedback", json=body).raise_for_status()
            engine = make_engine(url)
            with Session(engine) as session:
                waiting = session.scalars(select(Decision.id).where(Decision.needs_review.is_(True))).all()
            engine.dispose()
            logger.info("%d decisions wait for review", len(waiting))
            OUT.mkdir(parents=True, exist_ok=True)
            with chromium_driver(width=1280, height=1500) as browser:
                browser.get(f"{base}/ui/")
                browser.save_screenshot(str(OUT / "staff_queue.png"))
                browser.get(f"{base}/ui/insights?days={DAYS}")
                # The whole page: the window as tall as the document (plus the browser's own chrome).
                height = browser.execute_script("return document.documentElement.scrollHeight")
                browser.set_window_size(1280, int(height) + 140)
                browser.save_screenshot(str(OUT / "staff_insights.png"))
    logger.info("wrote %s and %s", OUT / "staff_queue.png", OUT / "staff_insights.png")


if __name__ == "__main__":
    main()
