"""Transfer records on a real folder, and how a pass is split into parallel streams."""

from __future__ import annotations

import os
from pathlib import Path

from lightd.fs.beneath import Root
from lightd.store import DocumentStore
from lightd.transfer.records import FOLDER, KEEP_SECONDS, Transfer, TransferRecords
from lightd.transfer.service import PARALLEL_BYTES, stream_count
from lightd.transfer.stream import plan, split


def test_records_round_trip_and_old_ones_go(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    records = TransferRecords(store)
    now = 2_000_000_000.0
    running = Transfer(
        id="a" * 16,
        internal_id="mc",
        role="target",
        phase="converging",
        started_at=now - 10,
        volume_id="v",
        backups=["b1"],
        published=True,
    )
    old = Transfer(
        id="b" * 16,
        internal_id="mc",
        role="source",
        state="completed",
        started_at=now - KEEP_SECONDS - 100,
        ended_at=now - KEEP_SECONDS - 50,
    )
    for record in (running, old):
        records.save(record)
    # What an older lightd wrote: {internal_id, power}, a source still running.
    store.write(f"{FOLDER}/{'c' * 16}.json", {"internal_id": "other", "power": "running"})
    store.write(f"{FOLDER}/{'d' * 16}.json", ["not a record"])
    loaded = {r.id: r for r in records.load(now=now)}
    assert set(loaded) == {"a" * 16, "c" * 16}
    again = loaded["a" * 16]
    assert again.document() == running.document()
    legacy = loaded["c" * 16]
    assert (legacy.role, legacy.state, legacy.power) == ("source", "running", "running")
    assert not (tmp_path / FOLDER / f"{'b' * 16}.json").exists()


def test_split_gives_disjoint_balanced_sets_in_walk_order(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    sizes = [5_000_000, 3_000_000, 3_000_000, 1_000, 10, 0]
    for index, size in enumerate(sizes):
        (tmp_path / "a" / f"f{index}").write_bytes(os.urandom(size))
    os.symlink("f0", tmp_path / "a" / "link")
    with Root(tmp_path) as root:
        entries, gone = plan(root)
    assert gone == []
    sets = split(entries, 2)
    names = [[e.name for e in group] for group in sets]
    assert sorted(n for group in names for n in group) == sorted(e.name for e in entries)
    assert "a" in names[0] and "a/b" in names[0] and "a/link" in names[0]
    weights = [sum(e.info.st_size for e in group) for group in sets]
    assert max(weights) < 6_100_000  # 5 MB and the small ones, the two 3 MB together
    order = [e.name for e in entries]
    for group in names:
        assert group == sorted(group, key=order.index)
    assert split(entries, 1) == [entries]


def test_parallel_streams_only_when_large() -> None:
    assert stream_count(PARALLEL_BYTES - 1, cpus=8) == 1
    assert stream_count(PARALLEL_BYTES, cpus=1) == 2
    assert stream_count(PARALLEL_BYTES, cpus=2) == 2
    assert stream_count(PARALLEL_BYTES, cpus=16) == 4
