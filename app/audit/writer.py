"""The audit writer: every decision is committed before its answer is sent, in batches under load.

``write`` queues a record and waits until the transaction that holds it has committed. One worker commits
whatever has queued up while the previous transaction ran, in one transaction: at low load a batch holds one
record (no added wait), under load the batches grow, so audit writing does not cap the service's throughput.
When the database fails, every waiting ``write`` raises ``AuditUnavailable`` and the caller answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.audit.models import Decision
from app.audit.repository import DecisionRecord, insert_decisions
from app.config import TextStorage
from app.errors import AuditUnavailable, DuplicateDecision

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 256


@dataclass(frozen=True)
class BatchOutcome:
    """What one commit did, for metrics: how many records, how long it took, how many failed."""

    size: int
    seconds: float
    failed: int


@dataclass
class _Pending:
    record: DecisionRecord
    done: asyncio.Future[None]


class AuditWriter:
    """Commits decisions to the audit database, batching concurrent writes into one transaction."""

    def __init__(
        self,
        engine: Engine,
        text_storage: TextStorage,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self._engine = engine
        self._text_storage = text_storage
        self._max_batch_size = max_batch_size
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        # One thread of its own: audit commits never wait behind inference work in the default pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")

    async def write(self, record: DecisionRecord) -> None:
        """Return once the record is committed; AuditUnavailable if the database cannot take it."""
        if self._closed:
            raise AuditUnavailable("the audit writer is closed")
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="audit-writer")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(record, done))
        # shield: a client that disconnects must not cancel a commit that is already under way.
        await asyncio.shield(done)

    async def close(self) -> None:
        """Commit what is queued, then stop; later writes raise AuditUnavailable."""
        self._closed = True
        if self._worker is not None:
            await self._queue.join()
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.perf_counter()
            try:
                errors = await loop.run_in_executor(self._executor, self._commit, [p.record for p in batch])
            except Exception as exc:  # a bug, not a database failure: fail these requests, keep the writer alive
                logger.exception("audit batch of %d failed unexpectedly", len(batch))
                errors = [exc] * len(batch)
            for pending, error in zip(batch, errors, strict=True):
                if error is None:
                    pending.done.set_result(None)
                else:
                    pending.done.set_exception(error)
                self._queue.task_done()
            if self._on_batch is not None:
                failed = sum(error is not None for error in errors)
                self._on_batch(BatchOutcome(len(batch), time.perf_counter() - started, failed))

    def _commit(self, records: Sequence[DecisionRecord]) -> list[Exception | None]:
        """Commit the records in one transaction; an error per record (None where it was committed)."""
        try:
            try:
                self._insert(records)
            except IntegrityError as exc:
                if len(records) > 1:
                    # One duplicate request id must not fail the others: commit them one by one.
                    return [error for record in records for error in self._commit([record])]
                return [self._duplicate_or(exc, records[0])]
        except SQLAlchemyError as exc:
            logger.error("audit database unavailable, %d decisions refused: %s", len(records), exc)
            return [AuditUnavailable(f"the audit database is unavailable ({exc.__class__.__name__})") for _ in records]
        return [None] * len(records)

    def _insert(self, records: Sequence[DecisionRecord]) -> None:
        with Session(self._engine) as session, session.begin():
            insert_decisions(session, records=records, text_storage=self._text_storage)

    def _duplicate_or(self, error: IntegrityError, record: DecisionRecord) -> Exception:
        """DuplicateDecision if the request id is taken, else the integrity error itself (a bug)."""
        with Session(self._engine) as session:
            if session.get(Decision, record.request_id) is None:
                return error
        return DuplicateDecision(f"a decision with request id {record.request_id!r} is already in the audit log")
