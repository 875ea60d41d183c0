"""A volume as a tar stream, read through :mod:`lightd.fs`'s no-follow descriptor walk.

The walk and the entry writer are the ones ``compress`` uses (symlinks stored as links,
never followed; special files and root ``.lightd-tmp-*`` entries left out; modes, owners
and mtimes kept). On top: gitignore-style ``ignore`` patterns (plus the volume's
``.lightdignore``), a byte meter for progress, a rate limit and a cancel flag checked on
every write. Compression (gzip, or zstd for ``tar.zst``) runs in a second thread, like
``tar | gzip``. Blocking: run in a
worker thread. This module must not publish anything: it writes into the sink it is given.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Literal, Protocol, cast

import pathspec
import zstandard

from lightd.errors import FileNotFound, LightdError
from lightd.fs import ops
from lightd.fs.archive import Walked, add_to_tar, walk_volume
from lightd.fs.beneath import DIR_FLAGS, Root, closing_fd

IGNORE_FILE = ".lightdignore"
MAX_IGNORE_BYTES = 256 * 1024
CHUNK = 1024 * 1024

Sink = Callable[[bytes], None]


class Cancelled(LightdError):
    message = "Cancelled"


@dataclass
class Meter:
    """Progress and control shared by a worker thread and the event loop."""

    bytes_total: int = 0
    bytes_done: int = 0
    files: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    limit_bytes_s: float = 0.0
    on_progress: Callable[[], None] | None = None
    _window_start: float = field(default_factory=time.monotonic)
    _window_bytes: int = 0

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def count(self, size: int) -> None:
        """``size`` more bytes read; sleeps to stay under the limit; raises if cancelled."""
        self.check()
        self.bytes_done += size
        if self.on_progress is not None:
            self.on_progress()
        if self.limit_bytes_s <= 0:
            return
        if self._window_bytes == 0:  # the first bytes (time spent queued is no credit)
            self._window_start = time.monotonic()
        self._window_bytes += size
        elapsed = time.monotonic() - self._window_start
        ahead = self._window_bytes / self.limit_bytes_s - elapsed
        if ahead > 0:
            time.sleep(ahead)
        if elapsed > 5:  # a fresh window now and then: a pause is not credit for a burst
            self._window_start = time.monotonic()
            self._window_bytes = 0


def ignore_spec(root: Root, patterns: list[str]) -> pathspec.GitIgnoreSpec | None:
    """The patterns of the request plus the volume's ``.lightdignore``, if any."""
    lines = list(patterns)
    try:
        fd, size = ops.open_for_read(root, (IGNORE_FILE,))
    except (FileNotFound, LightdError):
        fd, size = -1, 0
    if fd >= 0:
        with os.fdopen(fd, "rb") as handle:
            text = handle.read(min(size, MAX_IGNORE_BYTES)).decode("utf-8", "replace")
        lines.extend(text.splitlines())
    lines = [line for line in lines if line.strip()]
    if not lines:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def walk(root: Root, spec: pathspec.GitIgnoreSpec | None) -> Iterator[Walked]:
    """Every entry of the volume not ignored; an ignored folder hides all below it."""
    hidden: str | None = None
    for item in walk_volume(root):
        arcname, info = item[0], item[1]
        if hidden is not None and arcname.startswith(hidden):
            continue
        hidden = None
        if spec is not None:
            is_dir = stat.S_ISDIR(info.st_mode)
            if spec.match_file(f"{arcname}/" if is_dir else arcname):
                if is_dir:
                    hidden = f"{arcname}/"
                continue
        yield item


def measure(root: Root, spec: pathspec.GitIgnoreSpec | None) -> tuple[int, int]:
    """Bytes of regular files and entries the backup will read (for ``bytes_total``)."""
    total = entries = 0
    for _arcname, info, _fd, _name in walk(root, spec):
        entries += 1
        if stat.S_ISREG(info.st_mode):
            total += info.st_size
    return total, entries


def tree_paths(root: Root, spec: pathspec.GitIgnoreSpec | None) -> tuple[list[str], int, int]:
    """What restic is to read, as paths relative to the volume, and how much.

    Every entry that is not a folder, and the folders that are really empty (restic reads
    a listed folder whole, so one holding only ignored entries is left out); then the
    bytes of regular files and the count of entries (folders included).
    """
    paths: list[str] = []
    total = entries = 0
    for arcname, info, dir_fd, name in walk(root, spec):
        entries += 1
        if stat.S_ISDIR(info.st_mode):
            if _is_empty(dir_fd, name):
                paths.append(arcname)
            continue
        if stat.S_ISREG(info.st_mode):
            total += info.st_size
        paths.append(arcname)
    return paths, total, entries


def _is_empty(dir_fd: int, name: str) -> bool:
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    with closing_fd(fd), os.scandir(fd) as found:
        return next(iter(found), None) is None


class _MeteredStream:
    """What :mod:`tarfile` writes into: counted, limited, then handed to ``out``."""

    def __init__(self, out: Sink, meter: Meter) -> None:
        self.out = out
        self.meter = meter
        self.position = 0

    def write(self, data: bytes) -> int:
        self.meter.count(len(data))
        self.out(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return None


ArchiveCodec = Literal["gz", "zst"]


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def compressor_for(codec: ArchiveCodec, level: int) -> _Compressor:
    """A fresh stream compressor: gzip (zlib) or one zstd frame (``zstandard``)."""
    if codec == "zst":
        return cast(_Compressor, zstandard.ZstdCompressor(level=level).compressobj())
    return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


class ThreadedCompressor:
    """Compresses what is written in a second thread; hashes and sinks the output."""

    def __init__(self, sink: Sink, compressor: _Compressor) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()
        self.size = 0
        self._compressor = compressor
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._thread = threading.Thread(target=self._work, name="lightd-backup-z", daemon=True)
        self._thread.start()

    def _emit(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.size += len(data)
            self.sink(data)

    def _work(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                self._emit(self._compressor.compress(data))
            self._emit(self._compressor.flush())
        except BaseException as exc:
            self._error = exc
            while self._queue.get() is not None:  # drain so the writer never blocks
                pass

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= CHUNK:
            self._queue.put(b"".join(self._pending))
            self._pending.clear()
            self._pending_size = 0

    def close(self) -> None:
        if self._pending:
            self._queue.put(b"".join(self._pending))
            self._pending.clear()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._pending.clear()
        self._queue.put(None)
        self._thread.join()


def write_tar(root: Root, spec: pathspec.GitIgnoreSpec | None, out: Sink, meter: Meter) -> None:
    """The volume as an uncompressed PAX tar into ``out``."""
    stream = _MeteredStream(out, meter)
    with tarfile.open(fileobj=cast(IO[bytes], stream), mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # missing from typeshed
        for item in walk(root, spec):
            meter.check()
            add_to_tar(tar, item)
            meter.files += 1


@dataclass(frozen=True)
class Written:
    size: int
    checksum: str


def write_archive(
    root: Root,
    spec: pathspec.GitIgnoreSpec | None,
    sink: Sink,
    meter: Meter,
    *,
    codec: ArchiveCodec = "gz",
    level: int = 6,
) -> Written:
    """The volume as tar.gz or tar.zst into ``sink``; its compressed size and SHA-256."""
    compressed = ThreadedCompressor(sink, compressor_for(codec, level))
    try:
        write_tar(root, spec, compressed.write, meter)
    except BaseException:
        compressed.abort()
        raise
    compressed.close()
    return Written(size=compressed.size, checksum=compressed.digest.hexdigest())
