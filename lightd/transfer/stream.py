"""The transfer wire format and the volume tar made and unpacked without following links.

A transfer body is a sequence of frames: one byte of kind, eight bytes of big-endian
length, the payload. ``M`` carries the manifest (JSON), ``D`` a piece of the
compressed (zstd, or gzip) PAX tar of the volume (with several streams, its first byte
is the stream's index), ``E`` the end (JSON: the SHA-256 and byte count of each
stream's payloads), ``B`` the start of a backup's archive (then ``D`` pieces and its
``E``). :class:`FrameReader` takes bytes as they arrive.

:func:`pack` walks the volume with descriptors (``O_NOFOLLOW`` at every step, as
:mod:`lightd.fs.beneath`) and writes folders, regular files (mode, float mtime) and
symlinks (their text, verbatim); special files are left out. :func:`unpack` writes such
a tar into an empty staging folder: names with ``..`` or absolute names are refused,
every parent is opened without following, files are created exclusively, so an entry can
never be written through a link the archive made earlier; an entry replaces what an
earlier pass wrote at its name, and :func:`remove` drops entries a source no longer has
(a live transfer's final pass). All are blocking.
This module must not know about HTTP or containers.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal, cast

import zstandard

from lightd.errors import ArchiveRejected, LightdError
from lightd.fs.archive import entry_parts
from lightd.fs.beneath import DIR_FLAGS, READ_FLAGS, Root, closing_fd, lstat_at
from lightd.fs.paths import TEMP_PREFIX

HEADER = struct.Struct(">cQ")
MAX_META_FRAME = 4 * 1024 * 1024
MAX_DATA_FRAME = 8 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_PIECE = 4 * CHUNK
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameError(ValueError):
    """The body is not a sequence of well-formed frames."""


class FrameReader:
    """Frames out of bytes fed in any pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buffer)
            limit = MAX_DATA_FRAME if kind == b"D" else MAX_META_FRAME
            if kind not in (b"M", b"D", b"E", b"B") or length > limit:
                raise FrameError(f"bad frame header {kind!r} of {length} bytes")
            end = HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            yield kind, payload

    @property
    def pending(self) -> int:
        return len(self._buffer)


Compression = Literal["zstd", "gzip"]
COMPRESSIONS: tuple[Compression, ...] = ("zstd", "gzip")


class _Compressed:
    """A write-only file object that compresses into ``sink``: zstd level 1 on every core,
    or gzip level 1 (the network, not the compressor, should be the limit)."""

    def __init__(self, sink: Callable[[bytes], None], compression: Compression) -> None:
        self._sink = sink
        self._zip: Any = (
            zstandard.ZstdCompressor(level=1, threads=-1).compressobj()
            if compression == "zstd"
            else zlib.compressobj(1, zlib.DEFLATED, 31)
        )
        self._pending = bytearray()
        self._written = 0

    def tell(self) -> int:
        return self._written

    def write(self, data: bytes) -> int:
        self._written += len(data)
        self._pending += self._zip.compress(data)
        if len(self._pending) >= CHUNK:
            self._hand_off()
        return len(data)

    def _hand_off(self) -> None:
        # A multi-threaded zstd job may give several MiB at once: pieces stay well
        # under MAX_DATA_FRAME.
        while self._pending:
            piece = bytes(self._pending[:MAX_PIECE])
            del self._pending[:MAX_PIECE]
            self._sink(piece)

    def close(self) -> None:
        self._pending += self._zip.flush()
        self._hand_off()


def _walk(dir_fd: int, prefix: str) -> Iterator[tuple[str, os.stat_result, int, str]]:
    with os.scandir(dir_fd) as found:
        names = sorted(item.name for item in found)
    for name in names:
        if not prefix and name.startswith(TEMP_PREFIX):
            continue
        info = lstat_at(dir_fd, name)
        if info is None:
            continue
        arcname = f"{prefix}{name}"
        yield arcname, info, dir_fd, name
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            with closing_fd(child):
                yield from _walk(child, f"{arcname}/")


Signature = tuple[int, int, int, int, str]


def signature(info: os.stat_result, link: str = "") -> Signature:
    """What a live transfer's final pass compares: kind and mode, size, mtime, inode, link."""
    return (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino, link)


@dataclass(frozen=True)
class Entry:
    """One entry to send: its archive name, what ``lstat`` said, a symlink's text."""

    name: str
    info: os.stat_result
    link: str = ""

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.info.st_mode)


def plan(
    root: Root,
    *,
    seen: dict[str, Signature] | None = None,
    since: dict[str, Signature] | None = None,
) -> tuple[list[Entry], list[str]]:
    """The entries to send (walk order; folders, regular files, symlinks) and those gone.

    ``seen`` receives the signature of every entry found. With ``since`` (the ``seen`` of
    an earlier pass) only entries whose signature changed are listed (folders always,
    for their mode and mtime); the names of ``since`` no longer present are returned.
    """
    entries: list[Entry] = []
    present: set[str] = set()
    for arcname, info, dir_fd, name in _walk(root.fd, ""):
        present.add(arcname)
        kind = stat.S_IFMT(info.st_mode)
        if kind not in (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK):
            continue  # FIFOs, sockets, devices are not sent
        link = ""
        if kind == stat.S_IFLNK:
            try:
                link = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                continue
        mark = signature(info, link)
        if seen is not None:
            seen[arcname] = mark
        if since is not None and kind != stat.S_IFDIR and since.get(arcname) == mark:
            continue
        entries.append(Entry(arcname, info, link))
    gone = sorted(set(since) - present) if since is not None else []
    return entries, gone


PER_FILE_COST = 64 * 1024  # what one file weighs when balancing streams (headers, opens)


def split(entries: list[Entry], streams: int) -> list[list[Entry]]:
    """``entries`` in ``streams`` disjoint sets of about equal weight, each in walk order.

    Folders and symlinks go to the first set; regular files to the lightest set so far,
    largest first.
    """
    if streams <= 1:
        return [list(entries)]
    order = {entry.name: index for index, entry in enumerate(entries)}
    sets: list[list[Entry]] = [[] for _ in range(streams)]
    weights = [0] * streams
    for entry in entries:
        if not entry.is_file:
            sets[0].append(entry)
            weights[0] += PER_FILE_COST
    for entry in sorted((e for e in entries if e.is_file), key=lambda e: -e.info.st_size):
        lightest = weights.index(min(weights))
        sets[lightest].append(entry)
        weights[lightest] += entry.info.st_size + PER_FILE_COST
    return [sorted(group, key=lambda e: order[e.name]) for group in sets]


class _Parents:
    """Descriptors of the folders entries live in, the last one kept open (walk order)."""

    def __init__(self, root: Root) -> None:
        self._root = root
        self._parts: tuple[str, ...] | None = None
        self._fd = -1

    def fd(self, parts: tuple[str, ...]) -> int:
        if parts != self._parts:
            self.close()
            self._fd = self._root.open_dir(parts)
            self._parts = parts
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._parts = -1, None


def pack_entries(
    root: Root, entries: list[Entry], sink: Callable[[bytes], None], compression: Compression
) -> None:
    """``entries`` (from :func:`plan`) as a compressed PAX tar, handed to ``sink`` in
    pieces of about :data:`CHUNK`. An entry gone or changed in kind meanwhile is skipped."""
    out = _Compressed(sink, compression)
    parents = _Parents(root)
    try:
        with tarfile.open(fileobj=cast(IO[bytes], out), mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # missing from typeshed
            for item in entries:
                _add(tar, parents, item)
    finally:
        parents.close()
    out.close()


def _add(tar: tarfile.TarFile, parents: _Parents, item: Entry) -> None:
    info = item.info
    entry = tarfile.TarInfo(item.name)
    entry.mtime = info.st_mtime
    # Exact to the nanosecond (a float of the seconds is not).
    seconds, nanos = divmod(info.st_mtime_ns, 1_000_000_000)
    entry.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"}
    entry.mode = stat.S_IMODE(info.st_mode)
    entry.uid, entry.gid = info.st_uid, info.st_gid
    if stat.S_ISDIR(info.st_mode):
        entry.type = tarfile.DIRTYPE
        tar.addfile(entry)
        return
    if stat.S_ISLNK(info.st_mode):
        entry.type = tarfile.SYMTYPE
        entry.linkname = item.link
        tar.addfile(entry)
        return
    parts = tuple(item.name.split("/"))
    try:
        fd = os.open(parts[-1], READ_FLAGS, dir_fd=parents.fd(parts[:-1]))
    except (OSError, LightdError):
        return
    with os.fdopen(fd, "rb", buffering=0) as handle:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            return
        os.set_blocking(fd, True)
        entry.size = now.st_size
        # A file that grows meanwhile is cut at the size in its header; one that shrinks
        # ends the tar with an error (tarfile), which fails the pass.
        tar.addfile(entry, cast(IO[bytes], handle))


def pack(
    root: Root,
    sink: Callable[[bytes], None],
    *,
    seen: dict[str, Signature] | None = None,
    since: dict[str, Signature] | None = None,
    compression: Compression = "zstd",
) -> list[str]:
    """The volume as one compressed PAX tar, handed to ``sink`` in pieces (see
    :func:`plan` for ``seen`` and ``since``); the names of ``since`` that are gone."""
    entries, gone = plan(root, seen=seen, since=since)
    pack_entries(root, entries, sink, compression)
    return gone


def _clear(parent: int, name: str) -> None:
    """Remove whatever is at ``name`` in ``parent`` (a folder with its tree), no following."""
    found = lstat_at(parent, name)
    if found is None:
        return
    if not stat.S_ISDIR(found.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    with closing_fd(os.open(name, DIR_FLAGS, dir_fd=parent)) as fd:
        with os.scandir(fd) as entries:
            names = [entry.name for entry in entries]
        for child in names:
            _clear(fd, child)
    os.rmdir(name, dir_fd=parent)


def remove(staging: Root, names: list[str]) -> None:
    """Remove the entries ``names`` (archive names) from ``staging``; absent ones are fine."""
    for name in sorted(names, key=lambda n: -n.count("/")):
        parts = entry_parts(name)
        if not parts:
            continue
        try:
            with staging.dir(parts[:-1]) as parent:
                _clear(parent, parts[-1])
        except FileNotFoundError:
            continue
        except LightdError:
            continue  # its folder is gone already


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The entry's mtime in nanoseconds, exact when the PAX header gives it."""
    text = member.pax_headers.get("mtime", "")
    whole, _, fraction = text.partition(".")
    if whole.lstrip("-").isdigit() and (not fraction or fraction.isdigit()):
        return int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9])
    return int(member.mtime * 1_000_000_000)


class _Forward:
    """A decompressed stream as a file tarfile can use in ``r:`` mode: full reads, and
    seeks forward only (by reading past); a seek backwards is a damaged archive."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = bytes(self._raw.read())
            self._position += len(data)
            return data
        pieces: list[bytes] = []
        wanted = size
        while wanted > 0:
            piece = self._raw.read(wanted)
            if not piece:
                break
            pieces.append(piece)
            wanted -= len(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._position + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self._position:
            raise tarfile.ReadError("the transfer archive cannot be read backwards")
        while self._position < target:
            if not self.read(min(CHUNK, target - self._position)):
                break
        return self._position


Folder = tuple[tuple[str, ...], int, int]  # parts, mode, mtime in nanoseconds


def unpack(
    archive: IO[bytes],
    staging: Root,
    compression: Compression = "zstd",
    *,
    folders: list[Folder] | None = None,
) -> int:
    """Write the compressed tar read from ``archive`` below ``staging``; entries written.

    Folders get their mode and mtime at the end; with ``folders`` given they are
    appended there instead, for :func:`finish_folders` once every stream of a pass is in.
    """
    pending: list[Folder] = [] if folders is None else folders
    count = 0
    raw: Any = (
        zstandard.ZstdDecompressor().stream_reader(archive)
        if compression == "zstd"
        else gzip.GzipFile(fileobj=archive, mode="rb")
    )
    try:
        # "r:" over a forward-only reader: tarfile reads file data in large pieces
        # straight from the decompressor (its stream mode copies every 10 KiB block).
        with tarfile.open(fileobj=cast(IO[bytes], _Forward(raw)), mode="r:") as tar:
            for member in tar:
                parts = entry_parts(member.name)
                if not parts:
                    continue
                count += 1
                mode = member.mode & 0o7777 & ~0o7000
                with staging.dir(parts[:-1], create=True) as parent:
                    name = parts[-1]
                    found = lstat_at(parent, name)
                    if found is not None and not (member.isdir() and stat.S_ISDIR(found.st_mode)):
                        _clear(parent, name)  # a later pass replaces what an earlier wrote
                    if member.isdir():
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(name, 0o700, dir_fd=parent)
                        if not stat.S_ISDIR(
                            os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                        ):
                            raise ArchiveRejected(f"Archive entry {member.name!r} is refused")
                        pending.append((parts, mode, mtime_ns(member)))
                    elif member.isreg():
                        source = tar.extractfile(member)
                        assert source is not None
                        fd = os.open(name, WRITE_FLAGS, 0o600, dir_fd=parent)
                        with closing_fd(fd):
                            while chunk := source.read(CHUNK):
                                view = memoryview(chunk)
                                while view:
                                    view = view[os.write(fd, view) :]
                            os.fchmod(fd, mode)
                            os.utime(fd, ns=(mtime_ns(member), mtime_ns(member)))
                    elif member.issym():
                        os.symlink(member.linkname, name, dir_fd=parent)
                        stamp = mtime_ns(member)
                        os.utime(name, ns=(stamp, stamp), dir_fd=parent, follow_symlinks=False)
                    else:
                        raise ArchiveRejected(f"Archive entry {member.name!r} is refused")
    except (tarfile.TarError, zstandard.ZstdError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ArchiveRejected(f"Transfer archive is damaged: {exc}") from exc
    if folders is None:
        finish_folders(staging, pending)
    return count


def finish_folders(staging: Root, folders: list[Folder]) -> None:
    """Give the unpacked folders their mode and mtime, deepest first."""
    for parts, mode, stamp in sorted(folders, key=lambda f: -len(f[0])):
        with staging.dir(parts) as fd:
            os.fchmod(fd, mode)
            os.utime(fd, ns=(stamp, stamp))
