"""The audit writer: batched commits, commit before return, fail closed, one bad record fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.database import make_engine
from app.audit.models import Decision
from app.audit.repository import DecisionRecord
from app.audit.writer import AuditWriter, BatchOutcome
from app.errors import AuditUnavailable, DuplicateDecision
from tests.app.conftest import BOTH_DATABASES

pytestmark = pytest.mark.anyio


def count_rows(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Decision)) or 0


@BOTH_DATABASES
async def test_concurrent_writes_are_batched_into_few_transactions(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    batches: list[BatchOutcome] = []
    writer = AuditWriter(audit_engine, "redacted", on_batch=batches.append)
    await asyncio.gather(*(writer.write(make_record()) for _ in range(300)))
    await writer.close()
    assert count_rows(audit_engine) == 300
    assert sum(batch.size for batch in batches) == 300
    assert all(batch.failed == 0 for batch in batches)
    # Requests that arrive while a transaction runs share the next one.
    assert len(batches) <= 10
    assert max(batch.size for batch in batches) > 1


@BOTH_DATABASES
async def test_write_returns_after_the_row_is_committed(
    database_url: str, audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    writer = AuditWriter(audit_engine, "redacted")
    record = make_record()
    await writer.write(record)
    other = make_engine(database_url)  # another connection pool sees only committed rows
    try:
        with Session(other) as session:
            assert session.get(Decision, record.request_id) is not None
    finally:
        other.dispose()
        await writer.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}",  # a directory where the database file should be
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/nothing", marks=pytest.mark.postgres),
    ],
)
async def test_an_unreachable_database_fails_every_write_with_audit_unavailable(
    url: str, tmp_path: Path, make_record: Callable[..., DecisionRecord]
) -> None:
    engine = make_engine(url.format(tmp=tmp_path))
    batches: list[BatchOutcome] = []
    writer = AuditWriter(engine, "redacted", on_batch=batches.append)
    results = await asyncio.gather(*(writer.write(make_record()) for _ in range(5)), return_exceptions=True)
    await writer.close()
    engine.dispose()
    assert all(isinstance(result, AuditUnavailable) for result in results)
    assert results[0].code == "audit_unavailable"  # type: ignore[union-attr]
    assert sum(batch.failed for batch in batches) == 5


@BOTH_DATABASES
async def test_a_duplicate_request_id_fails_only_its_own_write(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    batches: list[BatchOutcome] = []
    writer = AuditWriter(audit_engine, "redacted", on_batch=batches.append)
    first = make_record()
    await writer.write(first)
    results = await asyncio.gather(
        writer.write(make_record()),
        writer.write(make_record(request_id=first.request_id)),
        writer.write(make_record()),
        return_exceptions=True,
    )
    await writer.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], DuplicateDecision)
    assert batches[-1] == BatchOutcome(size=3, seconds=batches[-1].seconds, failed=1)
    assert count_rows(audit_engine) == 3


async def test_an_integrity_error_that_is_not_a_duplicate_is_not_reported_as_one(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    writer = AuditWriter(audit_engine, "redacted")
    with pytest.raises(IntegrityError):
        await writer.write(make_record(department=None))  # a bug: NOT NULL violated
    await writer.close()


async def test_close_commits_what_is_queued_then_refuses_writes(
    audit_engine: Engine, make_record: Callable[..., DecisionRecord]
) -> None:
    writer = AuditWriter(audit_engine, "redacted")
    pending = [asyncio.ensure_future(writer.write(make_record())) for _ in range(20)]
    await asyncio.sleep(0)  # the writes are queued
    await writer.close()
    await asyncio.gather(*pending)
    assert count_rows(audit_engine) == 20
    with pytest.raises(AuditUnavailable):
        await writer.write(make_record())
