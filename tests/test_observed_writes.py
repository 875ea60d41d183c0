"""Observed-state writes: every patch is on disk when it returns, patches that meet a
write under way fold into one write, and a forgotten record is not written again."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
