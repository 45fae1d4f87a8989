"""The audit log through the service, on SQLite and PostgreSQL: one row per answered decision, no personal data
stored, fail closed when the database goes away, feedback and audit endpoints, agreement metrics."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, event, make_url, select, text
from sqlalchemy.orm import Session

from app.audit.models import Decision
from app.audit.repository import DecisionRecord, insert_decisions
from app.config import Settings
from app.main import create_app
from tests.app.conftest import (
    AUDIT_HEADERS,
    BOTH_DATABASES,
    CLASSIFY_HEADERS,
    FEEDBACK_HEADERS,
    POSTGRES_SERVER,
    serve_app,
)

pytestmark = [pytest.mark.anyio, BOTH_DATABASES]


def luhn_completed(nine_digits: str) -> str:
    """Nine digits of a personnummer with their check digit."""
    total = sum(sum(divmod(int(char) * (2 - index % 2), 10)) for index, char in enumerate(nine_digits))
    return nine_digits + str((10 - total % 10) % 10)


def personnummer(number: int) -> str:
    """A distinct valid personnummer (YYYYMMDD-NNNN) for each number below 1000."""
    digits = luhn_completed(f"{80 + number % 20:02d}{1 + number % 12:02d}{1 + number % 28:02d}{number:03d}")
    return f"19{digits[:6]}-{digits[6:]}"


def report(number: int) -> str:
    return (
        f"Hej! Gatlampan på Storgatan {number % 50 + 1} är trasig sedan i måndags. "
        f"Mitt personnummer är {personnummer(number)}, ring 070-{number:03d} 45 67."
    )


def rows(engine: Engine) -> dict[str, Decision]:
    with Session(engine) as session:
        return {decision.id: decision for decision in session.scalars(select(Decision))}


async def classify(client: httpx.AsyncClient, number: int) -> httpx.Response:
    return await client.post("/v1/classify", json={"text": report(number)}, headers=CLASSIFY_HEADERS)


async def test_n_concurrent_requests_leave_exactly_n_rows_and_no_personnummer(
    client: httpx.AsyncClient, audit_engine: Engine, database_url: str
) -> None:
    count = 40
    responses = await asyncio.gather(*(classify(client, number) for number in range(count)))
    assert [response.status_code for response in responses] == [200] * count
    stored = rows(audit_engine)
    assert len(stored) == count
    assert set(stored) == {response.json()["request_id"] for response in responses}
    sent = [personnummer(number) for number in range(count)]
    # Every way the number could have been kept: 12 or 10 digits, with or without its hyphen.
    forms = {form for number in sent for digits in (number, number[2:]) for form in (digits, digits.replace("-", ""))}
    if database_url.startswith("sqlite"):
        # The raw bytes of the database file and its write-ahead log, not what SQL shows.
        database_file = Path(make_url(database_url).database or "")
        raw = b"".join(path.read_bytes() for path in database_file.parent.glob(database_file.name + "*"))
    else:
        with audit_engine.connect() as connection:
            raw = connection.execute(text("SELECT string_agg(decisions::text, '') FROM decisions")).scalar_one()
            raw = raw.encode()
    assert not [form for form in forms if form.encode() in raw]
    assert raw.count(b"[PERSONNUMMER]") >= count


@contextmanager
def database_outage(app: FastAPI, database_url: str) -> Iterator[None]:
    """Make the audit database unavailable to the running app, then bring it back.

    PostgreSQL: the database stops accepting connections and its open connections are terminated (what a
    server restart does). SQLite has no server to stop: every new connection fails, and the pool is emptied.
    """
    engine: Engine = app.state.engine
    if database_url.startswith("sqlite"):

        def refuse(*_args: Any) -> None:
            raise __import__("sqlite3").OperationalError("disk I/O error (test outage)")

        event.listen(engine, "do_connect", refuse)
        engine.dispose()
        try:
            yield
        finally:
            event.remove(engine, "do_connect", refuse)
        return
    name = make_url(database_url).database
    admin = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        connection.execute(
            # With a timeout the call waits until each backend has gone: no commit can slip through after.
            text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = :name"),
            {"name": name},
        )
    try:
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.005)


async def test_no_request_is_answered_without_its_row_when_the_database_fails_mid_run(
    client: httpx.AsyncClient,
    app: FastAPI,
    audit_engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A gate holds decisions of the burst after the first ten between the model and the audit log, so the outage
    # certainly begins while requests are in flight: decided, not yet recorded.
    writer = app.state.audit_writer
    record_decision = writer.write
    gate = asyncio.Event()
    passed: list[str] = []
    held: list[str] = []

    async def gated_write(record: DecisionRecord) -> None:
        if len(passed) < 10:
            passed.append(record.request_id)
        elif not gate.is_set():
            held.append(record.request_id)
            await gate.wait()
        await record_decision(record)

    before = await asyncio.gather(*(classify(client, number) for number in range(10)))
    monkeypatch.setattr(writer, "write", gated_write)
    burst = [asyncio.ensure_future(classify(client, number)) for number in range(10, 40)]
    await wait_until(lambda: len(held) + sum(task.done() for task in burst) == len(burst))
    with database_outage(app, database_url):
        gate.set()
        during = list(await asyncio.gather(*burst))
        during += await asyncio.gather(*(classify(client, number) for number in range(40, 50)))
        audit_during = await client.get("/v1/audit", headers=AUDIT_HEADERS)
    monkeypatch.undo()
    after = await asyncio.gather(*(classify(client, number) for number in range(50, 60)))

    stored = rows(audit_engine)
    answered = [r for r in before + during + after if r.status_code == 200]
    refused = [r for r in before + during + after if r.status_code != 200]
    assert all(r.status_code == 200 for r in before + after)
    assert len(held) == 20
    assert {r.headers["x-request-id"] for r in refused} == set(held) | {r.headers["x-request-id"] for r in during[-10:]}
    assert all(r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable" for r in refused)
    assert {r.json()["request_id"] for r in answered} <= set(stored)
    assert not {r.headers["x-request-id"] for r in refused} & set(stored)
    assert len(stored) == len(answered) == 60 - len(refused)
    assert (audit_during.status_code, audit_during.json()["error"]["code"]) == (503, "audit_unavailable")
    metrics = (await client.get("/metrics")).text
    assert f"kommunrouter_audit_write_failures_total {float(len(refused))}" in metrics


async def test_feedback_is_stored_with_the_decision_and_shown_by_the_audit_endpoint(
    client: httpx.AsyncClient,
) -> None:
    decided = (await classify(client, 7)).json()
    request_id = decided["request_id"]
    sent = report(7)
    place = sent.index("Storgatan 8")
    correction = {
        "request_id": request_id,
        "department": "trafik_parkering",
        "severity": "hog",
        "keywords": [{"start": place, "end": place + len("Storgatan 8"), "type": "PLATS"}],
        "reviewer": "handläggare 12",
    }
    created = await client.post("/v1/feedback", json=correction, headers=FEEDBACK_HEADERS)
    assert created.status_code == 201, created.text
    assert created.json()["client"] == "reviewer"

    audit = await client.get(f"/v1/audit/{request_id}", headers=AUDIT_HEADERS)
    assert audit.status_code == 200
    record = audit.json()
    assert record["text"] == (
        "Hej! Gatlampan på Storgatan 8 är trasig sedan i måndags. Mitt personnummer är [PERSONNUMMER], ring [TELEFON]."
    )
    assert record["department"] == decided["department"]["label"]
    assert record["model_version"] == "tiny-test"
    assert record["client"] == "classifier"
    assert [k["type"] for k in record["keywords"]] == [k["type"] for k in decided["keywords"]]
    (stored_feedback,) = record["feedback"]
    assert stored_feedback["department"] == "trafik_parkering"
    assert stored_feedback["reviewer"] == "handläggare 12"
    span = stored_feedback["keywords"][0]
    assert record["text"][span["start"] : span["end"]] == "Storgatan 8"


@pytest.mark.parametrize(
    ("path", "method", "headers", "status"),
    [
        ("/v1/audit", "get", {}, 401),
        ("/v1/audit", "get", CLASSIFY_HEADERS, 403),
        ("/v1/audit", "get", FEEDBACK_HEADERS, 403),
        ("/v1/audit/some-id", "get", CLASSIFY_HEADERS, 403),
        ("/v1/feedback", "post", CLASSIFY_HEADERS, 403),
        ("/v1/feedback", "post", {"X-API-Key": "wrong"}, 401),
    ],
)
async def test_audit_and_feedback_need_their_scopes(
    client: httpx.AsyncClient, path: str, method: str, headers: dict[str, str], status: int
) -> None:
    response = await client.request(method, path, headers=headers, json={"request_id": "x"})
    assert response.status_code == status


async def test_feedback_errors(client: httpx.AsyncClient) -> None:
    request_id = (await classify(client, 1)).json()["request_id"]
    unknown = await client.post("/v1/feedback", json={"request_id": "nope"}, headers=FEEDBACK_HEADERS)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "decision_not_found")
    bad_label = await client.post(
        "/v1/feedback", json={"request_id": request_id, "department": "brandkaren"}, headers=FEEDBACK_HEADERS
    )
    assert (bad_label.status_code, bad_label.json()["error"]["code"]) == (422, "invalid_feedback")
    extra = await client.post("/v1/feedback", json={"request_id": request_id, "label": "x"}, headers=FEEDBACK_HEADERS)
    assert extra.status_code == 422
    missing = await client.get("/v1/audit/nope", headers=AUDIT_HEADERS)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "decision_not_found")
    # Input no database can store or compare is refused before it reaches one.
    nul = await client.post("/v1/feedback", json={"request_id": "a\x00b"}, headers=FEEDBACK_HEADERS)
    assert nul.status_code == 422
    assert (await client.get("/v1/audit/a%00b", headers=AUDIT_HEADERS)).status_code == 422
    for params in ({"department": "a\x00"}, {"until": "0.5"}, {"since": "1700000000"}, {"since": "2024-13-01"}):
        assert (await client.get("/v1/audit", params=params, headers=AUDIT_HEADERS)).status_code == 422, params
    # A valid time beyond datetime's range in UTC is earlier than every decision, not an error.
    early = await client.get("/v1/audit", params={"since": "0001-01-01T00:00:00+01:00"}, headers=AUDIT_HEADERS)
    assert (early.status_code, early.json()["total"]) == (200, 1)


async def test_audit_list_filters_by_time_department_and_review_with_pages_and_total(
    client: httpx.AsyncClient, audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    records = [
        make_record(
            created_at=start + timedelta(days=day),
            department="avfall" if day % 2 else "gata_park",
            needs_review=day % 3 == 0,
        )
        for day in range(10)
    ]
    with Session(audit_engine) as session, session.begin():
        insert_decisions(session, records=records, text_storage="redacted")

    async def page(**params: Any) -> dict[str, Any]:
        response = await client.get("/v1/audit", params=params, headers=AUDIT_HEADERS)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    everything = await page()
    assert everything["total"] == 10
    assert [item["request_id"] for item in everything["items"]] == [r.request_id for r in reversed(records)]
    window = await page(since="2024-05-03T00:00:00Z", until="2024-05-07T00:00:00Z")
    assert {item["request_id"] for item in window["items"]} == {r.request_id for r in records[2:6]}
    naive_is_utc = await page(since="2024-05-03T00:00:00", until="2024-05-07T00:00:00")
    assert naive_is_utc["total"] == 4
    waste_to_review = await page(department="avfall", needs_review="true")
    assert [item["request_id"] for item in waste_to_review["items"]] == [records[9].request_id, records[3].request_id]
    second = await page(department="gata_park", limit=2, offset=2)
    assert (second["total"], second["limit"], second["offset"]) == (5, 2, 2)
    assert [item["request_id"] for item in second["items"]] == [records[4].request_id, records[2].request_id]
    assert (await client.get("/v1/audit", params={"limit": 0}, headers=AUDIT_HEADERS)).status_code == 422


async def test_metrics_report_the_reviewers_agreement_per_department(client: httpx.AsyncClient) -> None:
    decisions = [(await classify(client, number)).json() for number in range(3)]
    chosen = decisions[0]["department"]["label"]
    other = "skola" if chosen != "skola" else "avfall"
    judgements = [{"department": chosen}, {}, {"department": other}]
    for decision, judgement in zip(decisions, judgements, strict=True):
        body = {"request_id": decision["request_id"], **judgement}
        assert (await client.post("/v1/feedback", json=body, headers=FEEDBACK_HEADERS)).status_code == 201
    metrics = (await client.get("/metrics")).text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("kommunrouter_feedback_")
    }
    agreement: dict[str, list[float]] = {}
    for decision, judgement in zip(decisions, judgements, strict=True):
        label = decision["department"]["label"]
        agreement.setdefault(label, []).append(float(judgement.get("department", label) == label))
    for label, agreed in agreement.items():
        assert samples[f'kommunrouter_feedback_reviewed_decisions{{department="{label}"}}'] == len(agreed)
        ratio = samples[f'kommunrouter_feedback_agreement_ratio{{department="{label}"}}']
        assert ratio == pytest.approx(sum(agreed) / len(agreed))
    assert "kommunrouter_audit_batch_size_count" in metrics


async def test_hash_policy_stores_only_the_sha256_of_the_text(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(text_storage="hash"))
    async with serve_app(app) as client:
        request_id = (await classify(client, 3)).json()["request_id"]
        record = (await client.get(f"/v1/audit/{request_id}", headers=AUDIT_HEADERS)).json()
    assert record["text"] is None
    assert record["text_sha256"] == hashlib.sha256(report(3).encode()).hexdigest()
    assert all(keyword["text"] is None for keyword in record["keywords"])
