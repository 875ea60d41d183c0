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
import errno
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal, cast

import zstandard

from lightd.errors import ArchiveRejected, LightdError
from lightd.fs.archive import entry_parts
from lightd.fs.beneath import DIR_FLAGS, READ_FLAGS, Root, closing_fd, lstat_at
from lightd.fs.durable import start_writeback
from lightd.fs.paths import TEMP_PREFIX
from lightd.transfer import tar

HEADER = struct.Struct(">cQ")
MAX_META_FRAME = 4 * 1024 * 1024
MAX_DATA_FRAME = 8 * 1024 * 1024
CHUNK = 1024 * 1024
BATCH = 2 * CHUNK  # tar bytes gathered before each compressor call
MAX_PIECE = 4 * CHUNK
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
WRITEBACK_STEP = 8 * CHUNK  # a file's bytes written before their writeback is started


Buffer = bytes | bytearray | memoryview


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameError(ValueError):
    """The body is not a sequence of well-formed frames."""


class FrameReader:
    """Frames out of bytes fed in any pieces.

    A frame whole inside a piece is handed out as a view of that piece (no copy); one
    spread over pieces is assembled once, into a buffer of its exact size. Payloads are
    bytes-like (``bytes``, ``bytearray`` or ``memoryview``) and stay valid after the
    next :meth:`feed`.
    """

    def __init__(self) -> None:
        self._rest = memoryview(b"")  # what the last piece holds past the frames taken
        self._frame = bytearray()  # a frame being assembled (its header first)
        self._filled = 0

    def feed(self, data: Buffer) -> Iterator[tuple[bytes, Buffer]]:
        if data:
            # Frames left untaken in the last piece come first (a rare copy).
            self._rest = memoryview(bytes(self._rest) + bytes(data) if self._rest else data)
        while True:
            view, self._rest = self._rest, memoryview(b"")
            if self._filled or len(view) < HEADER.size:
                view = self._gather(view)
                if self._filled < HEADER.size or self._filled < len(self._frame):
                    return  # all of the piece went into the frame being assembled
                whole, self._frame, self._filled = self._frame, bytearray(), 0
                self._rest = view
                yield bytes(whole[:1]), memoryview(whole)[HEADER.size :]
                continue
            kind, length = self._header(view)
            end = HEADER.size + length
            if len(view) < end:
                self._gather(view)
                return
            self._rest = view[end:]
            yield kind, view[HEADER.size : end]

    @staticmethod
    def _header(view: Buffer) -> tuple[bytes, int]:
        kind, length = HEADER.unpack_from(view)
        limit = MAX_DATA_FRAME if kind == b"D" else MAX_META_FRAME
        if kind not in (b"M", b"D", b"E", b"B") or length > limit:
            raise FrameError(f"bad frame header {kind!r} of {length} bytes")
        return bytes(kind), int(length)

    def _gather(self, view: memoryview) -> memoryview:
        """Add ``view`` to the frame being assembled; what is left past that frame."""
        if self._filled < HEADER.size:  # its header is still incomplete
            take = min(len(view), HEADER.size - self._filled)
            self._frame += view[:take]
            self._filled += take
            view = view[take:]
            if self._filled < HEADER.size:
                return view
            _, length = self._header(self._frame)
            self._frame += bytes(length)  # its exact size, filled in place
        take = min(len(view), len(self._frame) - self._filled)
        self._frame[self._filled : self._filled + take] = view[:take]
        self._filled += take
        return view[take:]

    @property
    def pending(self) -> int:
        return self._filled + len(self._rest)


Compression = Literal["zstd", "gzip"]
COMPRESSIONS: tuple[Compression, ...] = ("zstd", "gzip")


class _Packer:
    """Tar blocks gathered in one reusable buffer (file data read straight into it),
    compressed a buffer at a time: zstd level 1 (as the ``zstd -1 -T0`` peer) with
    ``threads`` workers (see :func:`zstd_threads`), or gzip level 1 (the network, not
    the compressor, should be the limit). The output goes to ``sink`` in pieces of at
    least :data:`CHUNK` (but the last) and at most :data:`MAX_PIECE`."""

    def __init__(
        self, sink: Callable[[bytes], None], compression: Compression, threads: int = -1
    ) -> None:
        self._sink = sink
        self._zip: Any = (
            zstandard.ZstdCompressor(level=1, threads=threads).compressobj()
            if compression == "zstd"
            else zlib.compressobj(1, zlib.DEFLATED, 31)
        )
        self._buffer = bytearray(BATCH)
        self._view = memoryview(self._buffer)
        self._used = 0
        self._out: list[bytes] = []
        self._out_size = 0

    def add(self, data: bytes) -> None:
        if self._used + len(data) > BATCH:
            self._compress()
        if len(data) > BATCH:
            self._emit(self._zip.compress(data))
            return
        self._view[self._used : self._used + len(data)] = data
        self._used += len(data)

    def add_file(self, fd: int, size: int) -> None:
        """``size`` bytes of ``fd`` (from its position), then the block padding; OSError
        if the file ends sooner (it shrank meanwhile: the pass fails)."""
        left = size
        while left:
            if self._used == BATCH:
                self._compress()
            room = self._view[self._used : self._used + min(left, BATCH - self._used)]
            got = os.readv(fd, [room])
            if got == 0:
                raise OSError(errno.EIO, "a file shrank while it was being sent")
            self._used += got
            left -= got
        self.add(bytes(tar.padding(size)))

    def _compress(self) -> None:
        if self._used:
            self._emit(self._zip.compress(self._view[: self._used]))
            self._used = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.append(data)
            self._out_size += len(data)
        if self._out_size >= CHUNK:
            self._hand_off()

    def _hand_off(self) -> None:
        whole = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out, self._out_size = [], 0
        # A multi-threaded zstd job may give several MiB at once: pieces stay well
        # under MAX_DATA_FRAME.
        if len(whole) <= MAX_PIECE:
            self._sink(whole)
            return
        view = memoryview(whole)
        for start in range(0, len(whole), MAX_PIECE):
            self._sink(bytes(view[start : start + MAX_PIECE]))

    def close(self) -> None:
        self.add(tar.END)
        self._compress()
        self._emit(self._zip.flush())
        if self._out:
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
    """Descriptors of the folders entries live in, the last one kept open (walk order);
    with ``create``, missing folders are made (the writer's staging)."""

    def __init__(self, root: Root, *, create: bool = False) -> None:
        self._root = root
        self._create = create
        self._parts: tuple[str, ...] | None = None
        self._fd = -1

    def fd(self, parts: tuple[str, ...]) -> int:
        if parts != self._parts:
            self.close()
            self._fd = self._root.open_dir(parts, create=self._create)
            self._parts = parts
        return self._fd

    def close(self) -> None:
        """Drop the kept descriptor (for the writer: the tree changed shape)."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._parts = -1, None


def zstd_threads(streams: int, cpus: int | None = None) -> int:
    """zstd workers per stream when ``streams`` are packed at once: the cores shared out;
    0 (compressing in the packing thread itself, no hand-off to a worker) once the
    streams alone occupy every core; -1 (every core) for a single stream."""
    if streams <= 1:
        return -1
    share = (cpus or os.cpu_count() or 1) // streams
    return share if share >= 2 else 0


def pack_entries(
    root: Root,
    entries: list[Entry],
    sink: Callable[[bytes], None],
    compression: Compression,
    *,
    threads: int = -1,
) -> None:
    """``entries`` (from :func:`plan`) as a compressed PAX tar (:mod:`lightd.transfer.tar`),
    handed to ``sink`` in pieces of about :data:`CHUNK`, zstd with ``threads`` workers
    (-1: every core, 0: none). An entry gone or changed in kind meanwhile is skipped."""
    out = _Packer(sink, compression, threads)
    parents = _Parents(root)
    try:
        for item in entries:
            _add(out, parents, item)
    finally:
        parents.close()
    out.close()


def _add(out: _Packer, parents: _Parents, item: Entry) -> None:
    info = item.info
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode):
        kind = tar.DIRECTORY if stat.S_ISDIR(info.st_mode) else tar.SYMLINK
        out.add(
            tar.entry_header(
                item.name,
                kind=kind,
                mode=mode,
                uid=info.st_uid,
                gid=info.st_gid,
                size=0,
                mtime_ns=info.st_mtime_ns,
                link=item.link,
            )
        )
        return
    parts = tuple(item.name.split("/"))
    try:
        fd = os.open(parts[-1], READ_FLAGS, dir_fd=parents.fd(parts[:-1]))
    except (OSError, LightdError):
        return
    with closing_fd(fd):
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            return
        os.set_blocking(fd, True)
        out.add(
            tar.entry_header(
                item.name,
                kind=tar.REGULAR,
                mode=mode,
                uid=info.st_uid,
                gid=info.st_gid,
                size=now.st_size,
                mtime_ns=info.st_mtime_ns,
            )
        )
        # A file that grows meanwhile is cut at the size in its header; one that
        # shrinks fails the pass.
        out.add_file(fd, now.st_size)


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


Folder = tuple[tuple[str, ...], int, int]  # parts, mode, mtime in nanoseconds


def _pieces(archive: IO[bytes] | Iterable[Buffer]) -> Iterator[Buffer]:
    if isinstance(archive, Iterable):
        yield from archive
        return
    while piece := archive.read(CHUNK):
        yield piece


class _Source:
    """The compressed pieces as the file zstd's stream reader pulls from."""

    def __init__(self, pieces: Iterator[Buffer]) -> None:
        self._pieces = pieces

    def read(self, size: int = -1) -> Buffer:
        return next(self._pieces, b"")


def _decompressed(
    archive: IO[bytes] | Iterable[Buffer], compression: Compression
) -> Iterator[memoryview]:
    """The decompressed stream in pieces, each valid until the next is asked for (zstd
    decompresses straight into one reusable buffer)."""
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], _Source(_pieces(archive))), read_size=CHUNK
        )
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while got := reader.readinto(buffer):
            yield view[:got]
        return
    unzip = zlib.decompressobj(31)
    for piece in _pieces(archive):
        if unzip.eof:
            break  # past the end of the compressed stream: nothing more is read
        out = unzip.decompress(piece)
        if out:
            yield memoryview(out)
    rest = unzip.flush()
    if rest:
        yield memoryview(rest)
    if not unzip.eof:
        raise EOFError("the compressed stream ended early")


Owner = tuple[int, int]  # uid, gid


class _Writer:
    """Creates the entries below ``staging``: parents opened without following (the
    last one kept while only files are written into it), files exclusively; with
    ``owner``, files and links go to it as they are made (folders in
    :func:`finish_folders`). Every :data:`WRITEBACK_STEP` bytes of a file, the writeback
    of those bytes is started, so the flush before *ready* has little left of large files
    (small ones are left to it: a call per small file costs more than it saves)."""

    def __init__(self, staging: Root, pending: list[Folder], owner: Owner | None) -> None:
        self._staging = staging
        self._pending = pending
        self._owner = owner
        self._parents = _Parents(staging, create=True)
        self._file = -1
        self._file_member: tar.Member | None = None
        self._written = 0  # bytes of the open file so far
        self._flushed = 0  # of which their writeback is started

    def begin(self, member: tar.Member) -> bool:
        """Create the entry (a file stays open for its data); False for the root."""
        parts = entry_parts(member.name)
        if not parts:
            return False
        mode = member.mode & 0o7777 & ~0o7000
        if member.kind == tar.REGULAR:
            parent = self._parents.fd(parts[:-1])
            name = parts[-1]
            try:
                fd = os.open(name, WRITE_FLAGS, 0o600, dir_fd=parent)
            except FileExistsError:
                _clear(parent, name)  # a later pass replaces what an earlier wrote
                fd = os.open(name, WRITE_FLAGS, 0o600, dir_fd=parent)
            self._file, self._file_member = fd, member
            self._written = self._flushed = 0
            if member.size == 0:
                self.end_file()
            return True
        self._parents.close()  # the tree changes shape (a folder, a link, a removal)
        if member.kind not in (tar.DIRECTORY, tar.SYMLINK):
            raise ArchiveRejected(f"Archive entry {member.name!r} is refused")
        with self._staging.dir(parts[:-1], create=True) as parent:
            name = parts[-1]
            found = lstat_at(parent, name)
            if found is not None and not (
                member.kind == tar.DIRECTORY and stat.S_ISDIR(found.st_mode)
            ):
                _clear(parent, name)  # a later pass replaces what an earlier wrote
            if member.kind == tar.DIRECTORY:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent)
                if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise ArchiveRejected(f"Archive entry {member.name!r} is refused")
                self._pending.append((parts, mode, member.mtime_ns))
            else:
                os.symlink(member.link, name, dir_fd=parent)
                if self._owner is not None:
                    os.chown(name, *self._owner, dir_fd=parent, follow_symlinks=False)
                stamp = member.mtime_ns
                os.utime(name, ns=(stamp, stamp), dir_fd=parent, follow_symlinks=False)
        return True

    def write(self, data: memoryview) -> None:
        if self._file < 0:
            return  # the data of an entry without a name (the root)
        while data:
            done = os.write(self._file, data)
            self._written += done
            data = data[done:]
        if self._written - self._flushed >= WRITEBACK_STEP:
            start_writeback(self._file, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def end_file(self) -> None:
        member, fd = self._file_member, self._file
        if member is None:
            return
        self._file, self._file_member = -1, None
        with closing_fd(fd):
            if self._flushed and self._written > self._flushed:
                start_writeback(fd, self._flushed, self._written - self._flushed)
            if self._owner is not None:
                os.fchown(fd, *self._owner)
            os.fchmod(fd, member.mode & 0o7777 & ~0o7000)
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))

    def close(self) -> None:
        if self._file >= 0:
            os.close(self._file)
            self._file, self._file_member = -1, None
        self._parents.close()


def unpack(
    archive: IO[bytes] | Iterable[Buffer],
    staging: Root,
    compression: Compression = "zstd",
    *,
    folders: list[Folder] | None = None,
    owner: Owner | None = None,
) -> int:
    """Write the compressed tar read from ``archive`` (a file, or an iterable of
    pieces) below ``staging``; entries written.

    Folders get their mode and mtime at the end; with ``folders`` given they are
    appended there instead, for :func:`finish_folders` once every stream of a pass is in.
    With ``owner`` (uid, gid) every entry written goes to it instead of staying lightd's
    (the archive's owners are never applied), so no walk is needed afterwards.
    """
    pending: list[Folder] = [] if folders is None else folders
    count = 0
    reader = tar.Reader()
    writer = _Writer(staging, pending, owner)
    try:
        for piece in _decompressed(archive, compression):
            for item in reader.feed(piece):
                if isinstance(item, memoryview):
                    writer.write(item)
                    continue
                writer.end_file()
                count += writer.begin(item)
            if reader.ended:
                break
        writer.end_file()
        reader.close()
    except (tar.TarError, zstandard.ZstdError, EOFError, zlib.error) as exc:
        raise ArchiveRejected(f"Transfer archive is damaged: {exc}") from exc
    finally:
        writer.close()
    if folders is None:
        finish_folders(staging, pending, owner=owner)
    return count


def finish_folders(staging: Root, folders: list[Folder], *, owner: Owner | None = None) -> None:
    """Give the unpacked folders their mode and mtime, deepest first; with ``owner``,
    them and ``staging`` itself to that owner too."""
    if owner is not None:
        os.fchown(staging.fd, *owner)
    for parts, mode, stamp in sorted(folders, key=lambda f: -len(f[0])):
        with staging.dir(parts) as fd:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            os.utime(fd, ns=(stamp, stamp))
