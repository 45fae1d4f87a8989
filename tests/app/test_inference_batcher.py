"""The micro-batcher groups concurrent requests, keeps results with their callers and drains at shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.errors import ServiceUnavailable
from app.inference.batcher import MicroBatcher

pytestmark = pytest.mark.anyio


class RecordingModel:
    """Doubles numbers, records the batches it saw and which threads ran them."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.seconds = seconds

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        return [item * 2 for item in items]


async def test_concurrent_requests_share_model_calls() -> None:
    model = RecordingModel(seconds=0.01)
    batcher = MicroBatcher(model, max_batch_size=4, max_wait_s=0.05)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    await batcher.close()
    assert results == [i * 2 for i in range(10)]
    assert sorted(i for batch in model.batches for i in batch) == list(range(10))
    assert len(model.batches) == 3
    assert max(map(len, model.batches)) == 4
    # Off the event loop, in one worker thread.
    assert len(model.threads) == 1
    assert threading.current_thread().name not in model.threads


async def test_a_lone_request_waits_no_longer_than_the_wait() -> None:
    batcher = MicroBatcher(RecordingModel(), max_batch_size=32, max_wait_s=0.02)
    batcher.start()
    started = time.perf_counter()
    assert await batcher.submit(21) == 42
    assert time.perf_counter() - started < 0.5
    await batcher.close()


async def test_requests_arriving_while_the_model_runs_form_the_next_batch() -> None:
    model = RecordingModel(seconds=0.05)
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.0)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)  # the first batch (one item) is now running
    rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 9)))
    assert await first == 0 and rest == [i * 2 for i in range(1, 9)]
    assert [len(batch) for batch in model.batches] == [1, 8]
    await batcher.close()


async def test_close_finishes_queued_requests_then_refuses_new_ones() -> None:
    model = RecordingModel(seconds=0.02)
    batcher = MicroBatcher(model, max_batch_size=2, max_wait_s=0.01)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(7)]
    await asyncio.sleep(0)  # queued, not yet run
    await batcher.close()
    assert [task.result() for task in pending] == [i * 2 for i in range(7)]
    assert not batcher.running
    with pytest.raises(ServiceUnavailable):
        await batcher.submit(1)


async def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    calls = 0

    def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return items

    batcher = MicroBatcher(flaky, max_batch_size=8, max_wait_s=0.01)
    batcher.start()
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert await batcher.submit(3) == 3
    await batcher.close()


async def test_a_cancelled_caller_does_not_break_its_batch() -> None:
    model = RecordingModel(seconds=0.05)
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=0.01)
    batcher.start()
    gone = asyncio.ensure_future(batcher.submit(1))
    stays = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.02)
    gone.cancel()
    assert await stays == 4
    await batcher.close()
