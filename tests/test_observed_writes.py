"""Observed-state writes: every patch is on disk when it returns, patches that meet a
write under way fold into one write, and a forgotten record is not written again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lightd.spec.observed import ObservedPatch
from lightd.store import DocumentStore
from lightd.store.observed import ObservedStore


def test_concurrent_patches_fold_and_the_file_holds_the_last(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    observed = ObservedStore(store)

    async def run() -> None:
        await observed.patch("mc-1", ObservedPatch(last_error="first"))
        assert observed.writes == 1
        await asyncio.gather(
            *(observed.patch("mc-1", ObservedPatch(last_error=f"e{i}")) for i in range(20))
        )

    asyncio.run(run())
    # The first of the twenty writes alone; the other nineteen wait behind it and the
    # first of them to write carries them all.
    assert observed.writes == 3
    reloaded = ObservedStore(store)
    reloaded.load()
    found = reloaded.get("mc-1")
    assert found is not None and found.last_error == "e19"


def test_each_sequential_patch_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    observed = ObservedStore(store)

    async def run() -> None:
        for i in range(5):
            await observed.patch("mc-1", ObservedPatch(last_error=f"e{i}"))
            assert store.read("state/containers/mc-1.json")["last_error"] == f"e{i}"

    asyncio.run(run())
    assert observed.writes == 5


def test_a_forgotten_record_is_not_written_again(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    observed = ObservedStore(store)

    async def run() -> None:
        await observed.patch("mc-1", ObservedPatch(last_error="a"))
        await asyncio.gather(
            observed.patch("mc-1", ObservedPatch(last_error="b")),
            observed.forget("mc-1"),
        )

    asyncio.run(run())
    assert observed.get("mc-1") is None
    assert not (tmp_path / "state/containers/mc-1.json").exists()


def test_a_patch_waiting_through_a_forget_never_writes_beside_a_later_one(
    tmp_path: Path,
) -> None:
    """A patch queued behind a forget's delete and one made after the forget are written
    one at a time, and the file ends with the last patch (the forget once dropped the
    key's write lock with the queued patch still waiting on it)."""
    store = DocumentStore(tmp_path)
    observed = ObservedStore(store)
    writing = 0
    overlapped = 0
    plain_write = store.write

    def slow_write(*args: Any, **kwargs: Any) -> Any:
        nonlocal writing, overlapped
        writing += 1
        overlapped = max(overlapped, writing)
        try:
            time.sleep(0.05)
            return plain_write(*args, **kwargs)
        finally:
            writing -= 1

    store.write = slow_write  # type: ignore[method-assign]

    async def run() -> None:
        await observed.patch("mc-1", ObservedPatch(last_error="a"))
        first = asyncio.create_task(observed.patch("mc-1", ObservedPatch(last_error="b")))
        await asyncio.sleep(0.01)  # b is writing and holds the key's lock
        forgetting = asyncio.create_task(observed.forget("mc-1"))
        await asyncio.sleep(0)
        queued = asyncio.create_task(observed.patch("mc-1", ObservedPatch(last_error="c")))
        await asyncio.gather(first, forgetting)  # c still waits behind the forget's delete
        await asyncio.sleep(0)
        await asyncio.gather(queued, observed.patch("mc-1", ObservedPatch(last_error="d")))

    asyncio.run(run())
    assert overlapped == 1
    found = observed.get("mc-1")
    assert found is not None and found.last_error == "d"
    assert store.read("state/containers/mc-1.json")["last_error"] == "d"
