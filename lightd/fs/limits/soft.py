"""The soft backend: lightd's own accounting plus a throttled background rescan.

No kernel limit: :class:`Accountant` keeps each volume's bytes in memory, adds what
lightd's writers wrote (:meth:`Accountant.add`), and a background thread walks the
volumes again one at a time, at most every ``rescan_seconds`` each and at most
``entries_per_second`` entries a second (it sleeps between slices), to see what the
containers wrote. Readers never walk: :meth:`Accountant.usage` answers from memory
(before the first walk of a volume finishes: what lightd accounted since, from 0).

One measure for both: the apparent size, ``st_size`` of every regular file (a file
with several hard links once), and nothing for folders, links or other entries (a
per-entry cost of 0). That is what every lightd writer already counts (the bytes it
writes, less the size of a file it replaces), so a write is refused exactly when the
volume's files would pass the limit, and a rescan finds the same figure the writes
made. Sparse files count their full size (more than they allocate: on the safe side).
The soft backend limits bytes, not the number of entries.

A walk that overlapped a lightd write of its volume (one announced with
:meth:`Accountant.begin` and not yet added, or added while the walk ran) cannot tell
whether it saw that write, so its figure is dropped and the volume walked again at
the next round; after :data:`MAX_DROPPED_WALKS` dropped walks in a row the figure plus
the writes made during the walk is taken (it may count such a write twice until the
next walk: more, never less). A write announced and never added (refused or failed)
stops holding walks back after :data:`IN_FLIGHT_SECONDS`.

Between rounds the thread sleeps until the next volume is due (walks due within
:data:`DUE_SLACK_SECONDS` of each other share a round), at most ``rescan_seconds``,
and a volume lightd has not accounted before wakes it at once: an idle node with many
volumes does not look at each of them every second.

The manager stops a container whose volume is over its limit. The accountant also
answers for volumes another backend cannot measure (an unlimited volume under
``image``). It must not decide limits (see :mod:`lightd.fs.limits.decide`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lightd.fs.limits.base import VolumeRef
from lightd.fs.limits.decide import Probe

log = logging.getLogger("lightd.limits")

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SLICE_ENTRIES = 1000
MAX_DROPPED_WALKS = 3
IN_FLIGHT_SECONDS = 120.0


def probe() -> Probe:
    return Probe("soft", True, "lightd accounts its writes and rescans in the background")


# Volumes due this close together are walked in one round (one look at the list).
DUE_SLACK_SECONDS = 5.0
# A round with a volume due and not walked (a dropped walk) is followed this soon.
RETRY_SECONDS = 1.0


@dataclass
class _Count:
    bytes: int = 0
    scanned_at: float = 0.0  # monotonic time of the last finished walk; 0: never
    during_scan: int = 0  # bytes lightd added while a walk of it ran
    adds: int = 0  # how many adds ever (a walk compares it before and after)
    in_flight: int = 0  # writes announced with begin() and not added yet
    begun_at: float = 0.0  # monotonic time of the last begin()
    dropped: int = 0  # walks dropped in a row because a lightd write overlapped them

    def writing(self, now: float) -> bool:
        if self.in_flight and now - self.begun_at > IN_FLIGHT_SECONDS:
            self.in_flight = 0  # announced writes that never came (refused, failed)
        return self.in_flight > 0


class Throttle:
    """Sleeps so that at most ``per_second`` entries are read a second, in slices."""

    def __init__(self, per_second: int, stop: threading.Event) -> None:
        self.per_second = per_second
        self.stop = stop
        self.count = 0
        self.started = time.monotonic()

    def tick(self) -> None:
        self.count += 1
        if self.count % SLICE_ENTRIES:
            return
        due = self.started + self.count / self.per_second
        wait = due - time.monotonic()
        if wait > 0:
            self.stop.wait(wait)


def file_bytes(info: os.stat_result) -> int:
    """What one entry counts: a regular file's ``st_size``; any other entry nothing."""
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def walk_bytes(path: Path, tick: Callable[[], None] = lambda: None) -> int:
    """The apparent size below ``path``: :func:`file_bytes` of every entry, a file with
    several links once (descriptor walk, no link followed)."""
    total = 0
    linked: set[tuple[int, int]] = set()
    try:
        top = os.open(path, DIR_FLAGS)
    except OSError:
        return 0
    pending = [top]
    while pending:
        fd = pending.pop()
        try:
            with os.scandir(fd) as found:
                for item in found:
                    tick()
                    try:
                        info = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        with contextlib.suppress(OSError):
                            pending.append(os.open(item.name, DIR_FLAGS, dir_fd=fd))
                        continue
                    if info.st_nlink > 1 and stat.S_ISREG(info.st_mode):
                        key = (info.st_dev, info.st_ino)
                        if key in linked:
                            continue
                        linked.add(key)
                    total += file_bytes(info)
        except OSError:
            pass
        finally:
            os.close(fd)
    return total


class Accountant:
    """Usage of volumes from memory: lightd's writes, refreshed by a throttled walk."""

    def __init__(self, *, rescan_seconds: float, entries_per_second: int) -> None:
        self.rescan_seconds = rescan_seconds
        self.entries_per_second = entries_per_second
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a volume lightd did not account before
        self._thread: threading.Thread | None = None
        self.walks = 0  # finished walks since start (tests and the bench read it)
        self.on_walked: Callable[[str], None] = lambda _volume_id: None

    def usage(self, volume_id: str) -> int:
        with self._lock:
            count = self._counts.get(volume_id)
            return count.bytes if count is not None else 0

    def known(self, volume_id: str) -> bool:
        with self._lock:
            count = self._counts.get(volume_id)
            return count is not None and count.scanned_at > 0

    def _count(self, volume_id: str) -> _Count:
        """The volume's count (the caller holds the lock); a new one wakes the walker."""
        count = self._counts.get(volume_id)
        if count is None:
            count = self._counts[volume_id] = _Count()
            self._wake.set()
        return count

    def begin(self, volume_id: str) -> None:
        """A lightd write of the volume is about to change it (its :meth:`add` follows)."""
        with self._lock:
            count = self._count(volume_id)
            count.in_flight += 1
            count.begun_at = time.monotonic()

    def add(self, volume_id: str, delta: int) -> None:
        """A lightd write changed the volume by ``delta`` bytes (apparent size)."""
        with self._lock:
            count = self._count(volume_id)
            count.bytes = max(count.bytes + delta, 0)
            count.during_scan += delta
            count.adds += 1
            count.in_flight = max(count.in_flight - 1, 0)

    def forget(self, volume_id: str) -> None:
        with self._lock:
            self._counts.pop(volume_id, None)

    def start(self, volumes: Callable[[], Iterable[VolumeRef]]) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(volumes,), name="lightd-disk-scan", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def scan(self, volume: VolumeRef, throttle: Throttle | None = None) -> int | None:
        """Walk one volume now (in this thread) and store what it holds.

        Returns the figure stored, or None when the walk was dropped because a lightd
        write overlapped it (the volume stays due: the next round walks it again).
        """
        with self._lock:
            count = self._counts.setdefault(volume.id, _Count())
            count.during_scan = 0
            adds_before = count.adds
            writing_before = count.writing(time.monotonic())
        total = walk_bytes(volume.path, throttle.tick if throttle is not None else lambda: None)
        with self._lock:
            count = self._counts.setdefault(volume.id, _Count())
            now = time.monotonic()
            raced = writing_before or count.adds != adds_before or count.writing(now)
            if raced and count.dropped < MAX_DROPPED_WALKS:
                count.dropped += 1
                return None
            count.bytes = max(total + (count.during_scan if raced else 0), 0)
            count.during_scan = 0
            count.dropped = 0
            count.scanned_at = now
            self.walks += 1
            return count.bytes

    def _slack(self) -> float:
        return min(DUE_SLACK_SECONDS, self.rescan_seconds / 4)

    def _due(self, volume_id: str) -> bool:
        with self._lock:
            count = self._counts.get(volume_id)
        return (
            count is None
            or count.scanned_at == 0
            or time.monotonic() - count.scanned_at >= self.rescan_seconds - self._slack()
        )

    def _sleep_seconds(self, listed: set[str]) -> float:
        """Until the next of the ``listed`` volumes is due (at most ``rescan_seconds``)."""
        now = time.monotonic()
        nearest = self.rescan_seconds
        with self._lock:
            for volume_id in listed:
                count = self._counts.get(volume_id)
                if count is None or count.scanned_at == 0:
                    return min(RETRY_SECONDS, self.rescan_seconds)  # not walked yet
                nearest = min(nearest, count.scanned_at + self.rescan_seconds - now)
        return max(nearest, min(RETRY_SECONDS, self.rescan_seconds))

    def _loop(self, volumes: Callable[[], Iterable[VolumeRef]]) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            throttle = Throttle(self.entries_per_second, self._stop)
            listed: set[str] = set()
            for volume in list(volumes()):
                if self._stop.is_set():
                    return
                listed.add(volume.id)
                if not self._due(volume.id):
                    continue
                try:
                    stored = self.scan(volume, throttle)
                except Exception:
                    log.exception("disk usage walk of %s failed", volume.id)
                    continue
                if stored is not None:
                    self.on_walked(volume.id)
            self._wake.wait(self._sleep_seconds(listed))


class SoftBackend:
    """No kernel limit: folders as they are, usage from the :class:`Accountant`."""

    name = "soft"
    kernel_enforced = False

    def make_folder(self, volume: VolumeRef) -> None:
        volume.path.mkdir(mode=0o755)
        volume.path.chmod(0o755)

    def apply(self, volume: VolumeRef, *, limit: int | None, usage: int, in_use: bool) -> None:
        return None  # lightd's writers and the over-limit stop hold the limit

    def usage(self, volume: VolumeRef) -> int | None:
        return None

    def measures(self, volume: VolumeRef) -> bool:
        return False

    def attach(self, volume: VolumeRef, *, limit: int | None) -> None:
        return None

    def release(self, volume: VolumeRef) -> None:
        return None
