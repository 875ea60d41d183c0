"""The workqueue: collapsing hints, one worker per key, requeue while busy, backoff;
and the controller's bound on passes that keep changing the engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from lightd.reconcile.controller import AGAIN, MAX_STEPS, Controller, ControllerSettings
from lightd.reconcile.workqueue import Backoff, WorkQueue


def test_repeated_hints_collapse() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        for _ in range(5):
            queue.add("a")
        queue.add("b")
        assert len(queue) == 2
        assert await queue.get() == "a"
        assert await queue.get() == "b"

    asyncio.run(scenario())


def test_key_added_while_processing_is_requeued_once_done() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("a")
        queue.add("a")
        assert len(queue) == 0  # never handed to a second worker
        queue.done(key)  # type: ignore[arg-type]
        assert len(queue) == 1
        assert await queue.get() == "a"

    asyncio.run(scenario())


def test_no_key_is_worked_on_twice_at_once() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        active: set[str] = set()
        overlaps = 0
        runs: dict[str, int] = {}

        async def worker() -> None:
            nonlocal overlaps
            while (key := await queue.get()) is not None:
                if key in active:
                    overlaps += 1
                active.add(key)
                runs[key] = runs.get(key, 0) + 1
                await asyncio.sleep(0.01)
                active.discard(key)
                queue.done(key)

        workers = [asyncio.create_task(worker()) for _ in range(4)]
        for round_ in range(20):
            for key in ("a", "b", "c"):
                queue.add(key)
            await asyncio.sleep(0.003 * (round_ % 3))
        await asyncio.sleep(0.2)
        await queue.close()
        await asyncio.gather(*workers)
        assert overlaps == 0
        assert set(runs) == {"a", "b", "c"}
        assert all(count < 20 for count in runs.values())  # hints collapsed

    asyncio.run(scenario())


def test_add_after_and_retry_backoff() -> None:
    async def scenario() -> None:
        queue = WorkQueue(Backoff(initial_seconds=0.05, max_seconds=0.2, jitter=0.0))
        assert queue.retry("a") == 0.05
        assert queue.retry("a") == 0.1
        assert queue.retry("a") == 0.2
        assert queue.retry("a") == 0.2
        assert await asyncio.wait_for(queue.get(), 1) == "a"
        queue.forget("a")
        assert queue.failures("a") == 0
        queue.add_after("b", 0.05)
        assert len(queue) == 0
        assert await asyncio.wait_for(queue.get(), 1) == "b"
        await queue.close()

    asyncio.run(scenario())


def test_engine_changing_passes_requeue_at_once_until_the_step_bound(tmp_path: Path) -> None:
    """A key whose plan never empties is looked at again after 1 s, not in a tight loop."""
    controller = Controller(
        engine=cast(Any, None),
        desired=cast(Any, None),
        observed=cast(Any, None),
        consoles=cast(Any, None),
        volume_path=lambda _volume: None,
        data_dir=tmp_path,
        settings=ControllerSettings(),
    )
    for _ in range(MAX_STEPS - 1):
        assert controller._again("a") == AGAIN
    assert controller._again("b") == AGAIN  # counted per key
    assert controller._again("a") == 1.0
    assert controller._again("a") == AGAIN  # the count starts again
