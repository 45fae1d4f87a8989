"""Dynamic micro-batching: concurrent requests share model calls.

Requests wait in a queue; one task takes the oldest and whatever arrives within ``max_wait_s`` of it (up to
``max_batch_size``), and runs them as one call of a synchronous function in a single worker thread. While the
model runs, the next requests gather, so under load every call is a full batch and throughput approaches the
model's batched throughput; alone, a request waits at most ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    enqueued_at: float
    future: asyncio.Future[ResultT] = field(repr=False)


class MicroBatcher(Generic[ItemT, ResultT]):
    """Groups concurrent :meth:`submit` calls into calls of ``process`` (a list in, a list as long out)."""

    def __init__(
        self,
        process: Callable[[list[ItemT]], Sequence[ResultT]],
        *,
        max_batch_size: int,
        max_wait_s: float,
    ) -> None:
        self._process = process
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[ItemT, ResultT] | None] = asyncio.Queue()
        # One thread: the model runs one batch at a time and uses its own intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    def start(self) -> None:
        """Start collecting batches (call from the event loop that will submit)."""
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")

    async def submit(self, item: ItemT) -> ResultT:
        """The result for one item, computed in a batch with whatever else is waiting."""
        if not self.running:
            raise ServiceUnavailable("the service is not accepting requests (starting or shutting down)")
        loop = asyncio.get_running_loop()
        pending = _Pending(item=item, enqueued_at=loop.time(), future=loop.create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def close(self) -> None:
        """Stop taking new items, finish every queued one, then stop the worker thread."""
        if self._task is None:
            return
        self._closing = True
        self._queue.put_nowait(None)
        await self._task
        self._executor.shutdown(wait=True)

    async def _collect(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch, stopping = await self._gather(first)
            await self._run(batch)
            if stopping:
                return

    async def _gather(self, first: _Pending[ItemT, ResultT]) -> tuple[list[_Pending[ItemT, ResultT]], bool]:
        """A batch that starts with ``first``, and whether the stop marker came after it."""
        loop = asyncio.get_running_loop()
        batch = [first]
        deadline = first.enqueued_at + self._max_wait_s
        while len(batch) < self._max_batch_size:
            if self._queue.empty():
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    # A cancelled get leaves its item in the queue, so nothing is lost at the deadline.
                    async with asyncio.timeout(timeout):
                        pending = await self._queue.get()
                except TimeoutError:
                    break
            else:
                pending = self._queue.get_nowait()
            if pending is None:
                return batch, True
            batch.append(pending)
        return batch, False

    async def _run(self, batch: list[_Pending[ItemT, ResultT]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._process, [p.item for p in batch])
        except Exception as exc:
            logger.exception("a batch of %d failed in the model", len(batch))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, result in zip(batch, results, strict=True):
            # A caller that went away (client disconnect) has cancelled its future.
            if not pending.future.done():
                pending.future.set_result(result)
