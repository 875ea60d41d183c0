"""Follows a container's output by reading the engine's json-file log files directly.

Docker 20.10 (Debian's engine) follows a json-file log badly across rotation: while a
reader is behind, its ``logs --follow`` stream both repeats and drops lines when the file
rotates, and sometimes stops delivering altogether (moby/moby#37646 and its kin, fixed
only in 23.0). The files themselves are whole. When lightd can read them (same host,
root), :class:`JsonLogFollower` reads them the way a careful ``tail -F`` does: the
rotated files older than the current one first, then the current file; when the
current file is renamed away, the old descriptor is read to its end before the next
file is opened, so nothing written before a rotation is skipped and nothing is read
twice. It yields what the engine's follow stream yields with ``timestamps``: lines of
``<RFC 3339 time> <text>``.

It ends when the container's process is gone and the newest file is read to its end,
or when :meth:`close` is called from another thread. It must not decide anything about
the lines (throttling, repeats, delivery are the console's); it holds no docker-py
client and never writes to the files.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from lightd.engine.inotify import FolderWatch, watch_folder

READ_BYTES = 256 * 1024
# Polls of a file at its end: fast while output flows, slower the longer it stays quiet;
# once at the slowest, the follower sleeps on an inotify watch of the folder instead,
# woken by the engine's next write (its exit closes the file, which wakes it at once),
# or by the one thread that looks every QUIET_SECONDS at the processes of all sleeping
# followers (:class:`_Liveness`) and wakes those whose process is gone: a node with 300
# quiet containers wakes one thread every few seconds, not 300. A sleeper also wakes
# after SLEEP_MAX_SECONDS by itself.
POLL_MIN_SECONDS = 0.02
POLL_MAX_SECONDS = 0.25
QUIET_SECONDS = 5.0
SLEEP_MAX_SECONDS = 60.0
ALIVE_CHECK_SECONDS = 0.25
NS = 1_000_000_000
_epoch: dict[str, int] = {}


def time_ns(stamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC stamp like the engine writes (0 if
    unreadable); the seconds are parsed once per distinct second."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = _epoch.get(head)
    if seconds is None:
        try:
            parsed = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return 0
        seconds = int(parsed.replace(tzinfo=UTC).timestamp())
        if len(_epoch) > 4096:
            _epoch.clear()
        _epoch[head] = seconds
    digits = fraction[:9].ljust(9, "0")
    return seconds * NS + (int(digits) if digits.isdigit() else 0)


@dataclass(frozen=True)
class Process:
    """The container's main process as the host sees it: its pid and its start time
    (field 22 of ``/proc/<pid>/stat``), so a reused pid is not taken for it."""

    pid: int
    start: str

    @classmethod
    def of(cls, pid: int) -> Process | None:
        start = _start_time(pid)
        return None if pid <= 0 or start is None else cls(pid, start)

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


class _Liveness:
    """One thread for every sleeping follower: every :data:`QUIET_SECONDS` it looks at
    their containers' processes and sets the waker of each whose process is gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sleepers: dict[int, tuple[Process, threading.Event]] = {}
        self._thread: threading.Thread | None = None

    def add(self, process: Process, waker: threading.Event) -> None:
        with self._lock:
            self._sleepers[id(waker)] = (process, waker)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="lightd-log-liveness", daemon=True
                )
                self._thread.start()

    def discard(self, waker: threading.Event) -> None:
        with self._lock:
            self._sleepers.pop(id(waker), None)

    def _run(self) -> None:
        while True:
            time.sleep(QUIET_SECONDS)
            with self._lock:
                sleepers = list(self._sleepers.values())
            for process, waker in sleepers:
                if not process.alive():
                    waker.set()


_liveness = _Liveness()


def chain(path: str, max_files: int) -> list[str]:
    """The log's files that exist, oldest first: ``path.N`` .. ``path.1``, ``path``."""
    found = [f"{path}.{n}" for n in range(max_files, 0, -1) if os.path.exists(f"{path}.{n}")]
    if os.path.exists(path):
        found.append(path)
    return found


FileKey = tuple[int, int, int | None]


def identity(fd: int) -> FileKey:
    """A log file's identity: device, inode and the time of its first entry. The inode
    alone is not enough: a rotation that deletes the oldest file frees its inode, and the
    engine's next new file often gets it at once."""
    info = os.fstat(fd)
    return info.st_dev, info.st_ino, _entry_ns_at(fd, 0)


def _files(path: str, max_files: int) -> set[FileKey]:
    """The identity of every file of the log now."""
    found = set()
    for name in chain(path, max_files):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            found.add(identity(fd))
        finally:
            os.close(fd)
    return found


class JsonLogFollower:
    """One follow of one container's json-file log (see the module docstring)."""

    def __init__(self, path: str, *, process: Process, since_ns: int, max_files: int = 100) -> None:
        self._path = path
        self._process = process
        self._since_ns = since_ns
        self._max_files = max_files
        self._closed = threading.Event()
        self._carry: dict[str, tuple[str, str]] = {}  # stream -> a line cut in parts
        self._watch: FolderWatch | None = None

    def close(self) -> None:
        self._closed.set()
        watch = self._watch
        if watch is not None:
            watch.waker.set()

    def __iter__(self) -> Iterator[bytes]:
        watch = watch_folder(os.path.dirname(self._path))
        self._watch = watch
        try:
            yield from self._follow(watch)
        finally:
            self._watch = None
            if watch is not None:
                watch.close()

    def _follow(self, watch: FolderWatch | None) -> Iterator[bytes]:
        read: set[FileKey] = set()  # the files read to the end
        fd: int | None = None
        pending = b""
        poll = POLL_MIN_SECONDS
        armed = False  # sleeping on the folder's watch until the engine writes
        checked = 0.0  # when the process was last seen alive
        try:
            while not self._closed.is_set():
                if fd is None:
                    fd = self._open_next(read)
                    if fd is None:  # no file yet (or any more): the engine makes one
                        if not self._process.alive():
                            return
                        self._closed.wait(poll)
                        poll = min(POLL_MAX_SECONDS, poll * 1.5)
                        continue
                    self._seek_since(fd)
                    pending = b""
                data = os.read(fd, READ_BYTES)
                if data:
                    if armed and watch is not None:
                        watch.disarm()
                        armed = False
                    poll = POLL_MIN_SECONDS
                    out, pending = self._lines(pending + data)
                    if out:
                        yield out
                    continue
                if not self._current(fd):
                    # Renamed away by a rotation: the engine writes only to the new file
                    # from now on, so what it wrote here before is all there is to read.
                    yield from self._drain(fd, pending)
                    read.add(identity(fd))
                    os.close(fd)
                    fd = None
                    continue
                now = time.monotonic()
                if now - checked >= ALIVE_CHECK_SECONDS:
                    if not self._process.alive():
                        # The last writes came before the exit: they are read once more.
                        yield from self._drain(fd, pending)
                        return
                    checked = now
                if armed and watch is not None:
                    if watch.waker.wait(SLEEP_MAX_SECONDS):
                        # Written to (read, and poll while it flows) or the process is gone.
                        watch.disarm()
                        _liveness.discard(watch.waker)
                        armed = False
                        poll = POLL_MIN_SECONDS
                        checked = 0.0  # look at the process at once
                    continue
                if watch is not None and poll >= POLL_MAX_SECONDS and watch.arm():
                    armed = True
                    _liveness.add(self._process, watch.waker)
                    continue  # one more read first: a write before the arm is not missed
                self._closed.wait(poll)
                poll = min(POLL_MAX_SECONDS, poll * 1.5)
        finally:
            if watch is not None:
                _liveness.discard(watch.waker)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _drain(self, fd: int, pending: bytes) -> Iterator[bytes]:
        while data := os.read(fd, READ_BYTES):
            out, pending = self._lines(pending + data)
            if out:
                yield out

    def _current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the log's path (no rotation since)."""
        try:
            now = os.stat(self._path)
        except FileNotFoundError:
            return True  # between the rename and the new file: the rotation is not done
        info = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)

    def _open_next(self, read: set[FileKey]) -> int | None:
        """The oldest file of the log not read to its end yet that can hold lines at or
        after ``since`` (None: none). Oldest by its first entry's time, not by its name,
        and looked for again when a rotation renamed the files while they were opened
        (a file missed that way would be read late, out of order)."""
        for _ in range(100):
            candidates: list[tuple[float, int]] = []
            seen: set[FileKey] = set()
            for name in chain(self._path, self._max_files):
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # rotated away between the listing and the open
                info = os.fstat(fd)
                key = identity(fd)
                if key in read or key in seen:
                    os.close(fd)
                    continue
                seen.add(key)
                if (
                    self._since_ns
                    and not self._current(fd)
                    and _newest_ns(fd, info.st_size) < self._since_ns
                ):
                    read.add(key)  # rotated away and all older than since: not needed
                    os.close(fd)
                    continue
                first = key[2]
                candidates.append((float("inf") if first is None else first, fd))
            if _files(self._path, self._max_files) <= read | seen:
                break
            for _, fd in candidates:  # renamed under the look: look again
                os.close(fd)
        else:
            return None
        if not candidates:
            return None
        candidates.sort()
        for _, fd in candidates[1:]:
            os.close(fd)
        return candidates[0][1]

    def _seek_since(self, fd: int) -> None:
        """Moves ``fd`` near the first entry at or after ``since`` (a binary search on
        the entries' times, one second early: stdout and stderr may interleave)."""
        if not self._since_ns:
            return
        target = self._since_ns - NS
        low, high = 0, os.fstat(fd).st_size
        while high - low > READ_BYTES:
            middle = (low + high) // 2
            stamp = _entry_ns_at(fd, middle)
            if stamp is None or stamp >= target:
                high = middle
            else:
                low = middle
        os.lseek(fd, _line_start(fd, low), os.SEEK_SET)

    def _lines(self, data: bytes) -> tuple[bytes, bytes]:
        """The complete entries of ``data`` as engine stream lines, and the rest. An entry
        the engine cut in parts (over 16 KiB) is joined to one line, up to 64 KiB."""
        cut = data.rfind(b"\n")
        if cut < 0:
            return b"", data
        out: list[bytes] = []
        since = self._since_ns
        carry = self._carry
        for raw in data[: cut + 1].splitlines():
            try:
                entry = orjson.loads(raw)
                stamp, text, stream = entry["time"], entry["log"], entry.get("stream", "")
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                continue  # a torn or foreign line: the engine's own reader skips it too
            if not isinstance(stamp, str) or not isinstance(text, str):
                continue
            held = carry.pop(stream, None)
            if held is not None:
                stamp, text = held[0], held[1] + text
            if not text.endswith("\n"):
                if len(text) < PART_LIMIT:
                    carry[stream] = (stamp, text)
                    continue
                text += "\n"
            if since and time_ns(stamp) < since:
                continue
            out.append(f"{stamp} {text}".encode())
        return b"".join(out), data[cut + 1 :]


PART_LIMIT = 64 * 1024


def _line_start(fd: int, offset: int) -> int:
    """The offset of the first entry that starts at or after ``offset``."""
    if offset == 0:
        return 0
    chunk = os.pread(fd, READ_BYTES, offset - 1)
    newline = chunk.find(b"\n")
    return offset + newline if newline >= 0 else offset + len(chunk)


def _entry_ns_at(fd: int, offset: int) -> int | None:
    """The time of the first whole entry at or after ``offset`` (None: none there)."""
    start = _line_start(fd, offset)
    chunk = os.pread(fd, READ_BYTES, start)
    line = chunk.split(b"\n", 1)[0]
    try:
        stamp = orjson.loads(line)["time"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return time_ns(stamp) if isinstance(stamp, str) else None


def _newest_ns(fd: int, size: int) -> int:
    """The time of a file's last whole entry (0 when it has none)."""
    tail = os.pread(fd, min(size, READ_BYTES), max(0, size - READ_BYTES))
    for line in reversed(tail.rstrip(b"\n").split(b"\n")):
        try:
            stamp = orjson.loads(line)["time"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if isinstance(stamp, str):
            return time_ns(stamp)
    return 0
