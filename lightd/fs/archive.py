"""Compress parts of a volume into an archive, and extract an archive safely.

Compression walks the volume by descriptors (symlinks are stored as links, never
followed; special files are left out), writes a temporary file in the volume root and
renames it into place, so a failure or a killed daemon never leaves a half archive
under the requested name. The archive being written is never part of itself.

Extraction detects the format from the content, writes every entry into a temporary
folder through the same no-follow descriptor walk, and only then moves the result into
the destination. Absolute names, ``..`` and entries that would pass through a symlink
are refused; links are created only when they resolve inside the destination, otherwise
skipped and reported. A symlink is judged as the kernel will follow it, through the
links the archive already made (:func:`~lightd.fs.paths.resolve_link`), and what is
written is that checked result, relative to the link's folder with ``..`` only up
front, so no later entry can change where it leads; merged into a folder that exists,
every link is judged again through what that folder holds. A hard link to a symlink
becomes a symlink with the same text, judged from its own folder; device, FIFO and
socket entries are skipped. Entry count, total size and expansion ratio are limited.
This module must not follow a symlink, write outside its temporary folder before the
final move, or know about HTTP.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Literal, TypeVar, cast

from lightd.errors import (
    ArchiveRejected,
    DiskLimitExceeded,
    FileExists,
    FileNotFound,
    InvalidRequest,
    PathTraversal,
)
from lightd.fs.beneath import (
    DIR_FLAGS,
    DIR_MODE,
    READ_FLAGS,
    Root,
    closing_fd,
    lstat_at,
    open_child_dir,
    translate,
)
from lightd.fs.codec import CHUNK, CompressingWriter, DecompressingReader, compressor_for
from lightd.fs.ops import (
    WRITE_FLAGS,
    discard,
    guarded,
    links_below,
    open_for_read,
    stat_of,
    temp_name,
)
from lightd.fs.paths import (
    FOLDER,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    OTHER,
    TEMP_PREFIX,
    Found,
    Parts,
    display,
    is_within,
    relative_target,
    resolve_link,
    shown,
)

ArchiveFormat = Literal["tar.gz", "tar", "zip", "tar.bz2", "tar.xz"]
FORMATS: tuple[ArchiveFormat, ...] = ("tar.gz", "tar", "zip", "tar.bz2", "tar.xz")
_CODEC = {"tar.gz": "gz", "tar": "", "tar.bz2": "bz2", "tar.xz": "xz"}
# Below this much output the ratio is not enforced: a tiny archive of a repetitive
# config file may legitimately expand more than the ratio, and can do no harm.
RATIO_FLOOR = 1024 * 1024
MAX_LINK_TARGET = 4096
DOS_EPOCH = (1980, 1, 1, 0, 0, 0)
T = TypeVar("T")


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int
    max_entries: int
    max_ratio: float
    # Bytes the volume may still take (its disk limit); None: no limit.
    disk_room: int | None = None


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str

    def __post_init__(self) -> None:
        # Entry names may be any bytes; the answer that lists them is JSON.
        object.__setattr__(self, "name", shown(self.name))


@dataclass
class ExtractReport:
    entries: int = 0
    bytes: int = 0
    skipped: list[Skipped] = field(default_factory=list)


# -- compression -----------------------------------------------------------------------


def archive_parts(output: Parts, fmt: ArchiveFormat) -> Parts:
    """``output`` with the format's extension appended unless it already has it."""
    if not output:
        raise InvalidRequest("Invalid field 'output_name': must name a file")
    name = output[-1]
    if not name.endswith(f".{fmt}"):
        name = f"{name}.{fmt}"
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidRequest("Invalid field 'output_name': name too long")
    return (*output[:-1], name)


Walked = tuple[str, os.stat_result, int, str]
"""One entry of a walk: its archive name, its lstat, its parent folder's descriptor, its name.

The descriptor is only valid until the walk moves on (it is closed behind it)."""


def walk_volume(root: Root) -> Iterator[Walked]:
    """Every entry of the volume, parents before children, names sorted, no symlink
    followed; root ``.lightd-tmp-*`` entries are left out (the walk ``compress`` uses)."""
    return _walk_dir(root.fd, "", set())


def _walk_dir(dir_fd: int, prefix: str, skip: set[tuple[int, int]]) -> Iterator[Walked]:
    """Every entry below ``dir_fd`` (arcname, lstat, parent descriptor, name), no follow."""
    with os.scandir(dir_fd) as found:
        names = sorted(item.name for item in found)
    for name in names:
        if not prefix and name.startswith(TEMP_PREFIX):
            continue
        info = lstat_at(dir_fd, name)
        if info is None or (info.st_dev, info.st_ino) in skip:
            continue
        arcname = f"{prefix}{name}"
        yield arcname, info, dir_fd, name
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            with closing_fd(child):
                yield from _walk_dir(child, f"{arcname}/", skip)


def _walk_sources(root: Root, sources: list[Parts], skip: set[tuple[int, int]]) -> Iterator[Walked]:
    for parts in sources:
        if not parts:
            yield from _walk_dir(root.fd, "", skip)
            continue
        with root.parent(parts) as (dir_fd, name):
            info = lstat_at(dir_fd, name)
            if info is None:
                raise FileNotFound()
            arcname = "/".join(parts)
            yield arcname, info, dir_fd, name
            if stat.S_ISDIR(info.st_mode):
                with closing_fd(os.open(name, DIR_FLAGS, dir_fd=dir_fd)) as child:
                    yield from _walk_dir(child, f"{arcname}/", skip)


@contextlib.contextmanager
def _open_regular(dir_fd: int, name: str) -> Iterator[tuple[IO[bytes], int] | None]:
    """The regular file ``name`` opened for reading, or None if it is no longer one."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, IsADirectoryError):
        yield None
        return
    with os.fdopen(fd, "rb", buffering=0) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            yield None
            return
        os.set_blocking(fd, True)
        yield cast(IO[bytes], handle), info.st_size


def add_to_tar(tar: tarfile.TarFile, item: Walked) -> None:
    """Write one walked entry to ``tar``: folders, symlinks (as links) and regular files
    with their mode, owner and mtime; anything else, or a file gone meanwhile, is left out."""
    arcname, info, dir_fd, name = item
    entry = tarfile.TarInfo(arcname)
    entry.mtime = int(info.st_mtime)
    entry.mode = stat.S_IMODE(info.st_mode)
    entry.uid, entry.gid = info.st_uid, info.st_gid
    if stat.S_ISDIR(info.st_mode):
        entry.type = tarfile.DIRTYPE
        tar.addfile(entry)
    elif stat.S_ISLNK(info.st_mode):
        entry.type = tarfile.SYMTYPE
        entry.linkname = os.readlink(name, dir_fd=dir_fd)
        tar.addfile(entry)
    elif stat.S_ISREG(info.st_mode):
        with _open_regular(dir_fd, name) as opened:
            if opened is None:
                return
            handle, entry.size = opened
            tar.addfile(entry, handle)


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    stamp = time.localtime(mtime)[:6]
    return max(stamp, DOS_EPOCH)


class _BytesNameInfo(zipfile.ZipInfo):
    """A member whose name on disk is not UTF-8: stored as its bytes, UTF-8 flag off.

    zipfile can only write a name as ASCII or flagged UTF-8; this is what Info-ZIP does
    with such a name on Unix (readers take flagless names in their own charset).
    """

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # zipfile's name
        return self.filename.encode("utf-8", "surrogateescape"), self.flag_bits & ~0x800


def _zip_info(arcname: str, mtime: float) -> zipfile.ZipInfo:
    try:
        arcname.encode("utf-8")
    except UnicodeEncodeError:
        return _BytesNameInfo(arcname, date_time=_zip_time(mtime))
    return zipfile.ZipInfo(arcname, date_time=_zip_time(mtime))


def _add_to_zip(archive: zipfile.ZipFile, item: Walked) -> None:
    arcname, info, dir_fd, name = item
    entry = _zip_info(arcname, info.st_mtime)
    entry.create_system = 3
    entry.external_attr = (info.st_mode & 0xFFFF) << 16
    if stat.S_ISDIR(info.st_mode):
        entry.filename = f"{arcname}/"
        entry.external_attr |= 0x10
        archive.writestr(entry, b"")
    elif stat.S_ISLNK(info.st_mode):
        archive.writestr(entry, os.readlink(name, dir_fd=dir_fd).encode("utf-8", "surrogateescape"))
    elif stat.S_ISREG(info.st_mode):
        with _open_regular(dir_fd, name) as opened:
            if opened is None:
                return
            handle, size = opened
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.file_size = size
            with archive.open(entry, "w") as out:
                remaining = size
                while remaining > 0 and (chunk := handle.read(min(CHUNK, remaining))):
                    out.write(chunk)
                    remaining -= len(chunk)


def _write_archive(fd: int, fmt: ArchiveFormat, items: Iterator[Walked], *, level: int = 6) -> None:
    if fmt == "zip":
        with (
            os.fdopen(fd, "wb", closefd=False) as handle,
            zipfile.ZipFile(
                handle, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=level
            ) as archive,
        ):
            for item in items:
                _add_to_zip(archive, item)
        return
    writer = CompressingWriter(fd, compressor_for(_CODEC[fmt], level))
    try:
        with tarfile.open(
            fileobj=cast(IO[bytes], writer), mode="w", format=tarfile.PAX_FORMAT
        ) as tar:
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # missing from typeshed
            for item in items:
                add_to_tar(tar, item)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def compress(
    root: Root,
    *,
    sources: list[Parts],
    output: Parts,
    fmt: ArchiveFormat,
    overwrite: bool,
    level: int = 6,
    room: int | None = None,
    leave_out: Callable[[Parts], bool] | None = None,
) -> tuple[Parts, int]:
    """Write ``sources`` (default: the whole volume) to ``output``; its parts and size.

    ``leave_out`` (the volume's file denylist) names entries the archive does not hold.
    """
    target = archive_parts(output, fmt)
    for parts in sources:
        stat_of(root, parts)
    skip: set[tuple[int, int]] = set()
    with guarded(target, writing=False):
        existing = root.lstat(target)
    if existing is not None:
        if not overwrite or stat.S_ISDIR(existing.st_mode):
            raise FileExists()
        skip.add((existing.st_dev, existing.st_ino))
    temp = temp_name()
    try:
        with guarded(target):
            fd = os.open(temp, WRITE_FLAGS, 0o644, dir_fd=root.fd)
            with closing_fd(fd):
                skip.add((os.fstat(fd).st_dev, os.fstat(fd).st_ino))
                items = _walk_sources(root, sources or [()], skip)
                if leave_out is not None:
                    items = (item for item in items if not leave_out(tuple(item[0].split("/"))))
                _write_archive(fd, fmt, items, level=level)
                os.fsync(fd)
                size = os.fstat(fd).st_size
            if room is not None and size - (existing.st_size if existing else 0) > room:
                raise DiskLimitExceeded()
            with root.parent(target, create=True) as (dir_fd, name):
                found = lstat_at(dir_fd, name)
                if found is not None and (not overwrite or stat.S_ISDIR(found.st_mode)):
                    raise FileExists()
                os.rename(temp, name, src_dir_fd=root.fd, dst_dir_fd=dir_fd)
    except BaseException:
        discard(root, temp)
        raise
    return target, size


# -- extraction ------------------------------------------------------------------------


def _is_tar_header(block: bytes) -> bool:
    """True when ``block`` is a tar header by its checksum (v7 headers have no magic)."""
    if len(block) < 512 or not block[0]:
        return False
    stored = block[148:156].replace(b"\x00", b" ").strip()
    if not stored or stored.strip(b"01234567"):
        return False
    header = block[:148] + b" " * 8 + block[156:512]
    signed = sum(byte - 256 if byte > 127 else byte for byte in header)
    return int(stored, 8) in (sum(header), signed)


def detect_format(head: bytes) -> ArchiveFormat:
    """The archive format of a file from its first bytes (its name is not consulted).

    Every tar flavour is found: ustar, GNU and pax by their magic, v7 by its checksum.
    """
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:3] == b"BZh":
        return "tar.bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "tar.xz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if (len(head) >= 262 and head[257:262] == b"ustar") or _is_tar_header(head):
        return "tar"
    if len(head) >= 1024 and not head[:1024].strip(b"\x00"):
        return "tar"  # an empty tar archive: end-of-archive blocks only
    raise ArchiveRejected(
        "Unsupported archive format (expected tar, tar.gz, tar.bz2, tar.xz or zip)"
    )


class Budget:
    """The extraction limits, checked as entries and bytes arrive."""

    def __init__(self, limits: ArchiveLimits, archive_size: int) -> None:
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.entries = 0
        self.total = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveRejected(
                f"Archive has more than {self.limits.max_entries} entries "
                "(volumes.archive_max_entries)"
            )

    def check_expansion(self, produced: int, *, slack: int = 0) -> None:
        if produced > self.limits.max_total_bytes + slack:
            raise ArchiveRejected(
                f"Archive expands past {self.limits.max_total_bytes} bytes "
                "(volumes.archive_max_total_bytes)"
            )
        if produced > RATIO_FLOOR and produced > self.limits.max_ratio * self.archive_size:
            raise ArchiveRejected(
                f"Archive expands more than {self.limits.max_ratio:g}:1 (volumes.archive_max_ratio)"
            )

    def add(self, count: int) -> None:
        self.total += count
        if self.limits.disk_room is not None and self.total > self.limits.disk_room:
            raise DiskLimitExceeded()
        self.check_expansion(self.total)

    def stream_check(self, produced: int) -> None:
        """For the raw decompressed stream, which also carries tar headers and padding."""
        self.check_expansion(produced, slack=1024 * self.limits.max_entries + RATIO_FLOOR)


def entry_parts(name: str) -> Parts:
    """The parts of an archive entry name; ArchiveRejected for absolute names and ``..``."""
    if "\x00" in name:
        raise ArchiveRejected(f"Archive entry {name!r} is refused: NUL byte in name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise ArchiveRejected(f"Archive entry {name!r} is refused: absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ArchiveRejected(f"Archive entry {name[:64]!r}... is refused: path too long")
    parts: list[str] = []
    for piece in name.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            raise ArchiveRejected(f"Archive entry {name!r} is refused: it contains '..'")
        if len(piece.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ArchiveRejected(f"Archive entry {name!r} is refused: name too long")
        parts.append(piece)
    return tuple(parts)


class TreeWriter:
    """Creates entries below one folder descriptor, never following a symlink."""

    MAX_CACHED = 256

    def __init__(self, top_fd: int, budget: Budget, report: ExtractReport) -> None:
        self.top_fd = top_fd
        self.budget = budget
        self.report = report
        self._dirs: dict[Parts, int] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _cached(self, parts: Parts) -> int:
        return self.top_fd if not parts else self._dirs[parts]

    def dir_fd(self, parts: Parts, entry: str, *, create: bool = True) -> int:
        if not parts or parts in self._dirs:
            return self._cached(parts)
        if len(self._dirs) >= self.MAX_CACHED:
            self.close()
        depth = len(parts)
        while depth > 0 and parts[:depth] not in self._dirs:
            depth -= 1
        fd = self._cached(parts[:depth])
        for end in range(depth + 1, len(parts) + 1):
            try:
                fd = open_child_dir(fd, parts[end - 1], parts[:end], create=create)
            except PathTraversal as exc:
                raise ArchiveRejected(
                    f"Archive entry {entry!r} is refused: it goes through a symlink"
                ) from exc
            except FileExists as exc:
                raise ArchiveRejected(
                    f"Archive entry {entry!r} is refused: a file is in the way of a folder"
                ) from exc
            self._dirs[parts[:end]] = fd
        return fd

    def _create(self, parts: Parts, entry: str, make: Callable[[int, str], T]) -> T:
        """Run ``make(parent, name)``; an earlier non-folder entry of that name is replaced."""
        parent = self.dir_fd(parts[:-1], entry)
        name = parts[-1]
        try:
            return make(parent, name)
        except FileExistsError:
            found = lstat_at(parent, name)
            if found is not None and stat.S_ISDIR(found.st_mode):
                raise ArchiveRejected(
                    f"Archive entry {entry!r} is refused: a folder has the same name"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
            return make(parent, name)

    def folder(self, parts: Parts, entry: str, mode: int) -> None:
        if not parts:
            return
        fd = self.dir_fd(parts, entry)
        os.fchmod(fd, (mode & 0o755) | 0o700)

    def file(
        self, parts: Parts, entry: str, read: Callable[[int], bytes], mode: int, mtime: float
    ) -> None:
        def make(parent: int, name: str) -> int:
            return os.open(name, WRITE_FLAGS, 0o600, dir_fd=parent)

        with closing_fd(self._create(parts, entry, make)) as fd:
            while chunk := read(CHUNK):
                self.budget.add(len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, (mode & 0o755) | 0o600)
            with contextlib.suppress(OSError, OverflowError, ValueError):
                os.utime(fd, (mtime, mtime))

    def _lookup(self, parts: Parts) -> Found:
        """What the tree written so far holds at ``parts`` (for :func:`resolve_link`)."""
        try:
            parent = self.dir_fd(parts[:-1], display(parts), create=False)
        except (FileNotFound, ArchiveRejected):
            return OTHER
        found = lstat_at(parent, parts[-1])
        if found is None:
            return OTHER
        if stat.S_ISDIR(found.st_mode):
            return FOLDER
        if stat.S_ISLNK(found.st_mode):
            return Found("link", os.readlink(parts[-1], dir_fd=parent))
        return OTHER

    def symlink(self, parts: Parts, entry: str, target: str) -> None:
        folder = parts[:-1]
        self.dir_fd(folder, entry)  # a real folder, so that ".." from it means its parent
        resolved = resolve_link(folder, target, self._lookup)
        if resolved is None:
            self.report.skipped.append(Skipped(entry, "symlink points outside the destination"))
            return
        text = relative_target(folder, resolved)
        self._create(parts, entry, lambda parent, name: os.symlink(text, name, dir_fd=parent))

    def hardlink(self, parts: Parts, entry: str, target: str) -> None:
        try:
            source = entry_parts(target)
        except ArchiveRejected:
            source = ()
        if not source:
            self.report.skipped.append(Skipped(entry, "hard link points outside the destination"))
            return
        try:
            source_dir = self.dir_fd(source[:-1], entry, create=False)
        except (FileNotFound, ArchiveRejected):
            source_dir = -1
        found = lstat_at(source_dir, source[-1]) if source_dir >= 0 else None
        if found is not None and stat.S_ISLNK(found.st_mode):
            # link(2) would give the same text a new folder to be read from: judge it there.
            self.symlink(parts, entry, os.readlink(source[-1], dir_fd=source_dir))
            return
        if found is None or not stat.S_ISREG(found.st_mode):
            self.report.skipped.append(Skipped(entry, "hard link target is not in the archive"))
            return
        # A duplicate: resolving the new entry's folder may evict cached descriptors.
        with closing_fd(os.dup(source_dir)) as held:
            self._create(
                parts,
                entry,
                lambda parent, name: os.link(
                    source[-1], name, src_dir_fd=held, dst_dir_fd=parent, follow_symlinks=False
                ),
            )


def _usable(
    parts: Parts,
    entry: str,
    report: ExtractReport,
    leave_out: Callable[[Parts], bool] | None = None,
) -> bool:
    if parts and parts[0].startswith(TEMP_PREFIX):
        report.skipped.append(Skipped(entry, "reserved name"))
        return False
    if parts and leave_out is not None and leave_out(parts):
        report.skipped.append(Skipped(entry, "denied by the template"))
        return False
    return True


def _extract_tar(
    fd: int,
    kind: str,
    writer: TreeWriter,
    budget: Budget,
    report: ExtractReport,
    leave_out: Callable[[Parts], bool] | None = None,
) -> None:
    reader = DecompressingReader(fd, kind, check=budget.stream_check)
    try:
        # Not stream mode ("r|"): its buffer copies the rest of a 1 MiB block on every
        # small read. The reader seeks forward, which is all in-order reading needs.
        with tarfile.TarFile(fileobj=cast(IO[bytes], reader), mode="r") as tar:
            for member in tar:
                budget.entry()
                name = member.name
                parts = entry_parts(name)
                if not _usable(parts, name, report, leave_out):
                    continue
                if member.isdir():
                    writer.folder(parts, name, member.mode)
                elif not parts:
                    raise ArchiveRejected(f"Archive entry {name!r} is refused: no name")
                elif member.isreg():
                    stream = tar.extractfile(member)
                    assert stream is not None
                    writer.file(parts, name, stream.read, member.mode, member.mtime)
                elif member.issym():
                    writer.symlink(parts, name, member.linkname)
                elif member.islnk():
                    writer.hardlink(parts, name, member.linkname)
                else:
                    report.skipped.append(Skipped(name, "device, FIFO or other special entry"))
    except tarfile.TarError as exc:
        raise ArchiveRejected(f"Archive is damaged: {exc}") from exc
    finally:
        reader.close()


def _extract_zip(
    fd: int,
    writer: TreeWriter,
    budget: Budget,
    report: ExtractReport,
    leave_out: Callable[[Parts], bool] | None = None,
) -> None:
    try:
        with (
            os.fdopen(fd, "rb", closefd=False) as handle,
            zipfile.ZipFile(handle) as archive,
        ):
            members = archive.infolist()
            if len(members) > budget.limits.max_entries:
                raise ArchiveRejected(
                    f"Archive has more than {budget.limits.max_entries} entries "
                    "(volumes.archive_max_entries)"
                )
            for member in members:
                budget.entry()
                name = member.filename
                parts = entry_parts(name)
                if not _usable(parts, name, report, leave_out):
                    continue
                unix_mode = member.external_attr >> 16 if member.create_system == 3 else 0
                if member.is_dir():
                    writer.folder(parts, name, unix_mode or DIR_MODE)
                elif not parts:
                    raise ArchiveRejected(f"Archive entry {name!r} is refused: no name")
                elif stat.S_ISLNK(unix_mode):
                    with archive.open(member) as stream:
                        target = stream.read(MAX_LINK_TARGET + 1)
                    if len(target) > MAX_LINK_TARGET:
                        report.skipped.append(Skipped(name, "symlink target too long"))
                        continue
                    writer.symlink(parts, name, target.decode("utf-8", "surrogateescape"))
                elif stat.S_IFMT(unix_mode) not in (0, stat.S_IFREG):
                    report.skipped.append(Skipped(name, "device, FIFO or other special entry"))
                else:
                    mtime = time.mktime((*member.date_time, 0, 0, -1))
                    with archive.open(member) as stream:
                        writer.file(parts, name, stream.read, unix_mode or 0o644, mtime)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise ArchiveRejected(f"Archive is damaged or unsupported: {exc}") from exc
    except RuntimeError as exc:  # encrypted members
        raise ArchiveRejected(f"Archive cannot be read: {exc}") from exc


def _has_conflict(src_fd: int, dst_fd: int) -> str | None:
    with os.scandir(src_fd) as found:
        names = [item.name for item in found]
    for name in names:
        there = lstat_at(dst_fd, name)
        if there is None:
            continue
        here = lstat_at(src_fd, name)
        if here and stat.S_ISDIR(here.st_mode) and stat.S_ISDIR(there.st_mode):
            with (
                closing_fd(os.open(name, DIR_FLAGS, dir_fd=src_fd)) as sub_src,
                closing_fd(os.open(name, DIR_FLAGS, dir_fd=dst_fd)) as sub_dst,
            ):
                deeper = _has_conflict(sub_src, sub_dst)
            if deeper is not None:
                return f"{name}/{deeper}"
            continue
        return name
    return None


def _merge(src_fd: int, dst_fd: int) -> None:
    """Move everything under ``src_fd`` into ``dst_fd``; folders merge, files replace."""
    with os.scandir(src_fd) as found:
        names = [item.name for item in found]
    for name in names:
        there = lstat_at(dst_fd, name)
        here = lstat_at(src_fd, name)
        if here is None:
            continue
        if there is not None:
            if stat.S_ISDIR(here.st_mode) and stat.S_ISDIR(there.st_mode):
                with (
                    closing_fd(os.open(name, DIR_FLAGS, dir_fd=src_fd)) as sub_src,
                    closing_fd(os.open(name, DIR_FLAGS, dir_fd=dst_fd)) as sub_dst,
                ):
                    _merge(sub_src, sub_dst)
                continue
            if stat.S_ISDIR(there.st_mode):
                shutil.rmtree(name, dir_fd=dst_fd)
            else:
                os.unlink(name, dir_fd=dst_fd)
        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def _found_at(root: Root, parts: Parts) -> Found | None:
    """What is at ``parts`` in the volume, for a link resolution; None if nothing."""
    try:
        with root.parent(parts) as (dir_fd, name):
            info = lstat_at(dir_fd, name)
            if info is None:
                return None
            if stat.S_ISLNK(info.st_mode):
                return Found("link", os.readlink(name, dir_fd=dir_fd))
    except FileNotFound:
        return None
    return FOLDER if stat.S_ISDIR(info.st_mode) else OTHER


def _drop_links_leaving(root: Root, temp: str, destination: Parts, report: ExtractReport) -> None:
    """Before a merge: remove (and report) links that would leave through what is there.

    The extracted tree is checked against itself as it is written; merged into a folder
    that already holds entries (links a container made among them), a link may lead
    through those. Each is resolved again over the merged view: the archive's entry
    where there is one, the destination's otherwise.
    """

    def merged(parts: Parts) -> Found:
        if is_within(parts, destination):
            extracted = _found_at(root, (temp, *parts[len(destination) :]))
            if extracted is not None:
                return extracted
        return _found_at(root, parts) or OTHER

    for inner, text in list(links_below(root, (temp,))):
        folder = (*destination, *inner[:-1])
        resolved = resolve_link(folder, text, merged)
        if resolved is not None and is_within(resolved, destination):
            continue
        with root.parent((temp, *inner)) as (dir_fd, name):
            os.unlink(name, dir_fd=dir_fd)
        report.skipped.append(
            Skipped("/".join(inner), "symlink points outside the destination once merged")
        )


def _place(
    root: Root, temp: str, destination: Parts, *, overwrite: bool, report: ExtractReport
) -> None:
    with guarded(destination):
        found = root.lstat(destination)
        if found is None:
            with root.parent(destination, create=True) as (dir_fd, name):
                os.rename(temp, name, src_dir_fd=root.fd, dst_dir_fd=dir_fd)
            return
        if not stat.S_ISDIR(found.st_mode):
            raise FileExists(f"A file exists at the destination {display(destination)}")
        with (
            root.dir(destination) as dst_fd,
            closing_fd(os.open(temp, DIR_FLAGS, dir_fd=root.fd)) as src_fd,
        ):
            if not overwrite:
                conflict = _has_conflict(src_fd, dst_fd)
                if conflict is not None:
                    raise FileExists(
                        f"File already exists: {display((*destination, conflict))} "
                        "(set overwrite to replace)"
                    )
            _drop_links_leaving(root, temp, destination, report)
            _merge(src_fd, dst_fd)


def extract(
    root: Root,
    *,
    archive: Parts,
    destination: Parts,
    limits: ArchiveLimits,
    overwrite: bool,
    leave_out: Callable[[Parts], bool] | None = None,
) -> ExtractReport:
    """Extract the archive at ``archive`` into ``destination`` (created if missing).

    ``leave_out`` (the volume's file denylist, for parts below ``destination``) names
    entries that are skipped and reported.
    """
    report = ExtractReport()
    fd, size = open_for_read(root, archive)
    with closing_fd(fd):
        head = os.pread(fd, 1024, 0)
        fmt = detect_format(head)
        budget = Budget(limits, size)
        temp = temp_name()
        try:
            with guarded(destination):
                os.mkdir(temp, DIR_MODE, dir_fd=root.fd)
                with closing_fd(os.open(temp, DIR_FLAGS, dir_fd=root.fd)) as top:
                    writer = TreeWriter(top, budget, report)
                    try:
                        if fmt == "zip":
                            _extract_zip(fd, writer, budget, report, leave_out)
                        else:
                            _extract_tar(fd, _CODEC[fmt], writer, budget, report, leave_out)
                    finally:
                        writer.close()
            _place(root, temp, destination, overwrite=overwrite, report=report)
        except OSError as exc:
            raise translate(exc, destination) from exc
        finally:
            discard(root, temp)
    report.entries = budget.entries
    report.bytes = budget.total
    return report


__all__ = [
    "FORMATS",
    "ArchiveFormat",
    "ArchiveLimits",
    "ExtractReport",
    "Skipped",
    "Walked",
    "add_to_tar",
    "compress",
    "detect_format",
    "extract",
    "walk_volume",
]
