"""The soft accountant's measure and its walks, on a real folder (no daemon).

One measure for writes and walks (``st_size`` of regular files, a hard-linked file
once, nothing for folders and links), and a walk that overlapped a lightd write is
dropped rather than mixed with it (then taken after a few tries, never lower).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from lightd.fs.limits import soft
from lightd.fs.limits.base import VolumeRef


def test_walk_counts_apparent_size_of_files_once(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 1001)
    (tmp_path / "a" / "b" / "two").write_bytes(b"y" * 5)
    (tmp_path / "empty").write_bytes(b"")
    os.link(tmp_path / "a" / "one", tmp_path / "hard")
    (tmp_path / "link").symlink_to("a/one")
    with (tmp_path / "sparse").open("wb") as handle:
        handle.truncate(3 * 1024 * 1024)
    assert soft.walk_bytes(tmp_path) == 1001 + 5 + 3 * 1024 * 1024


class AddingThrottle(soft.Throttle):
    """A throttle whose first tick runs ``during`` (a write in the middle of the walk)."""

    def __init__(self, during: object) -> None:
        super().__init__(10**9, threading.Event())
        self.during = during

    def tick(self) -> None:
        if self.count == 0 and callable(self.during):
            self.during()
        super().tick()


def volume_with(tmp_path: Path, size: int) -> VolumeRef:
    (tmp_path / "f").write_bytes(b"z" * size)
    return VolumeRef("v1", tmp_path)


def test_a_quiet_walk_sets_the_figure(tmp_path: Path) -> None:
    accountant = soft.Accountant(rescan_seconds=60, entries_per_second=1000)
    volume = volume_with(tmp_path, 4000)
    accountant.add("v1", 10)  # lightd's figure before the walk, which the walk corrects
    assert accountant.scan(volume) == 4000
    assert accountant.usage("v1") == 4000 and accountant.known("v1")


def test_a_walk_overlapped_by_an_add_is_dropped_then_taken(tmp_path: Path) -> None:
    accountant = soft.Accountant(rescan_seconds=60, entries_per_second=1000)
    volume = volume_with(tmp_path, 4000)
    accountant.scan(volume)

    def write() -> None:  # lightd writes 100 bytes while the walk runs
        accountant.begin("v1")
        (tmp_path / "g").write_bytes(b"w" * 100)
        accountant.add("v1", 100)

    for _ in range(soft.MAX_DROPPED_WALKS):
        assert accountant.scan(volume, AddingThrottle(write)) is None
        (tmp_path / "g").unlink()
        accountant.add("v1", -100)
    assert accountant.usage("v1") == 4000
    taken = accountant.scan(volume, AddingThrottle(write))
    assert taken is not None and taken >= 4100  # more, never less
    assert accountant.scan(volume) == 4100  # a quiet walk: exact again


def test_a_write_in_flight_holds_walks_back_until_it_is_added(tmp_path: Path) -> None:
    accountant = soft.Accountant(rescan_seconds=60, entries_per_second=1000)
    volume = volume_with(tmp_path, 4000)
    accountant.begin("v1")  # checked, writing now: the walk may or may not see it
    (tmp_path / "g").write_bytes(b"w" * 100)
    assert accountant.scan(volume) is None
    accountant.add("v1", 100)  # the writer's own count: 100 more than before
    assert accountant.usage("v1") == 100
    assert accountant.scan(volume) == 4100  # not 4200: the write is counted once
    assert accountant.usage("v1") == 4100
