"""The async facade of volume files: what the API (and later SFTP) asks of a volume.

Each method resolves the volume, opens its root, runs one operation of :mod:`lightd.fs.ops`
or :mod:`lightd.fs.archive` in a thread (long ones on the volumes' own pool, see
:meth:`VolumeManager.run_heavy`) and closes the root again. Uploads stream into an
:class:`~lightd.fs.ops.AtomicWriter` under the size limit and are committed whole or not at
all; reads hand out a :class:`FileStream` that owns its descriptor. Paths arrive parsed
(:func:`lightd.fs.paths.parse_path`). What it makes (writes, uploads, folders, copies,
archives, extractions) is handed to the volume's container user (``owner_of``), folders on
the way included.

A path the volume's ``file_denylist`` matches (the templates of the containers using it;
``denylist`` gives it once per request or archive, the decision lives in
:mod:`lightd.templates.denylist`) is refused with
:class:`~lightd.errors.FileDenied` (403) by every method that reads, writes, renames,
copies, deletes or changes it, and is left out of archives made and extracted here;
listings still show it, as in the Wings family.

Every writer checks the volume's disk limit first (:class:`~lightd.fs.limits.DiskLimits`):
a write or copy whose size would pass it, an upload whose bytes reach it, an extraction
whose expanded size reaches it and an archive larger than the room left all fail with
:class:`~lightd.errors.DiskLimitExceeded` (507) and leave nothing behind; the kernel's
own EDQUOT/ENOSPC on a limited volume means the same. Other writers (SFTP, restores,
pulls) call :meth:`VolumeFiles.ensure_room` and :meth:`VolumeFiles.wrote` the same way.
It must not know about HTTP, nor touch a file without going through ``ops``/``archive``
(which never follow a symlink).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import BinaryIO, Concatenate, ParamSpec, Protocol, TypeVar

from lightd.errors import (
    DiskLimitConflict,
    DiskLimitExceeded,
    FileDenied,
    InsufficientStorage,
    PayloadTooLarge,
)
from lightd.fs import ops
from lightd.fs.archive import ArchiveFormat, ExtractReport, archive_parts, compress, extract
from lightd.fs.beneath import Root
from lightd.fs.limits import DiskLimits
from lightd.fs.paths import Parts
from lightd.fs.search import SearchQuery, SearchResult, search
from lightd.fs.volumes import Volume, VolumeInfo, VolumeManager

UPLOAD_CHUNK = 1024 * 1024  # bytes gathered before one write to the volume

P = ParamSpec("P")
T = TypeVar("T")


class PathRule(Protocol):
    """A volume's file denylist as the file layer sees it (built by the templates)."""

    def denies(self, parts: Parts, *, folder: bool | None = None) -> bool: ...


# volume id -> its denylist, or None when nothing in it is denied. Asked once per
# request or archive, never per entry.
DenylistOf = Callable[[str], "PathRule | None"]


def no_denylist(_volume_id: str) -> PathRule | None:
    return None


class FileStream:
    """An open regular file of a volume: its size, then its bytes, read in threads.

    The descriptor is owned by a file object, so it is closed even if :meth:`chunks` is
    never iterated.
    """

    def __init__(self, volumes: VolumeManager, fd: int, size: int) -> None:
        self._volumes = volumes
        self._handle: BinaryIO = os.fdopen(fd, "rb", buffering=0)
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        with self._handle:
            remaining = self.size
            while remaining > 0:
                chunk = await self._volumes.run(self._handle.read, min(ops.CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk


class VolumeFiles:
    """Volumes and the files in them, by volume reference (a UUID or a unique prefix)."""

    def __init__(
        self,
        volumes: VolumeManager,
        *,
        owner_of: Callable[[str], tuple[int, int] | None] | None = None,
        limit_owner: Callable[[str], str | None] = lambda _volume_id: None,
        in_use: Callable[[str], bool] = lambda _volume_id: False,
        denylist: DenylistOf = no_denylist,
    ) -> None:
        self._volumes = volumes
        self._denylist = denylist
        # volume id -> the uid, gid of its container's user: what lightd makes goes to it.
        self._owner_of = owner_of or (lambda _volume_id: None)
        # The container whose document sets a volume's limit (the document wins).
        self._limit_owner = limit_owner
        self._in_use = in_use

    def _owner(self, ref: str) -> tuple[int, int] | None:
        return self._owner_of(self._volumes.resolve(ref).id)

    def _refuse_denied(self, ref: str, *entries: Parts, folder: bool | None = None) -> str:
        """FileDenied when the denylist matches one of ``entries``; the volume's id."""
        volume_id = self._volumes.resolve(ref).id
        rule = self._denylist(volume_id)
        if rule is not None and any(rule.denies(parts, folder=folder) for parts in entries):
            raise FileDenied()
        return volume_id

    def _leave_out(self, volume_id: str, base: Parts = ()) -> Callable[[Parts], bool] | None:
        """What archives leave out: entries (below ``base``) the denylist matches."""
        rule = self._denylist(volume_id)
        if rule is None:
            return None
        return lambda parts: rule.denies((*base, *parts))

    # -- volumes ---------------------------------------------------------------------

    @property
    def disk(self) -> DiskLimits:
        return self._volumes.disk

    async def create_volume(self, *, disk_limit: int | None = None) -> Volume:
        return await self._volumes.run(self._volumes.create, disk_limit=disk_limit)

    async def set_disk_limit(self, ref: str, limit: int | None) -> VolumeInfo:
        """Change a volume's limit live; 409 when a document sets it or it cannot take it."""
        volume = self._volumes.resolve(ref)
        owner = self._limit_owner(volume.id)
        if owner is not None:
            raise DiskLimitConflict(
                f"The disk limit of this volume is set by container {owner}'s document "
                "(limits.disk)"
            )
        in_use = self._in_use(volume.id)
        await self._volumes.run_heavy(self.disk.set_limit, volume.ref, limit, in_use=in_use)
        return await self._volumes.run(self._volumes.info, volume)

    # -- the limit, for every writer -------------------------------------------------------

    async def ensure_room(self, ref: str, adding: int) -> None:
        """DiskLimitExceeded when ``adding`` more bytes would pass the volume's limit.

        The hook of writers outside this facade: SFTP writes, backup restores and
        pulls call it before they write (and :meth:`wrote` after).
        """
        volume = self._volumes.resolve(ref)
        await self._volumes.run(self.disk.check, volume.ref, adding)

    async def room(self, ref: str) -> int | None:
        volume = self._volumes.resolve(ref)
        return await self._volumes.run(self.disk.room, volume.ref)

    def wrote(self, ref: str, delta: int) -> None:
        """The volume changed by ``delta`` bytes through a writer (soft accounting)."""
        self.disk.wrote(self._volumes.resolve(ref).id, delta)

    async def volumes(self) -> builtins.list[VolumeInfo]:
        return await self._volumes.run(self._volumes.list)

    async def volume(self, ref: str) -> VolumeInfo:
        volume = self._volumes.resolve(ref)
        return await self._volumes.run(self._volumes.info, volume)

    async def delete_volume(self, ref: str) -> None:
        await self._volumes.run_heavy(self._volumes.delete, ref)

    # -- files -----------------------------------------------------------------------

    async def write(self, ref: str, parts: Parts, content: bytes) -> None:
        self._refuse_denied(ref, parts, folder=False)
        disk = self.disk
        volume = self._volumes.resolve(ref)
        owner = self._owner_of(volume.id)

        def write(root: Root) -> None:
            replaced = ops.regular_size(root, parts)
            with self._limited(volume.id):
                disk.check(volume.ref, len(content) - replaced)
                ops.write_file(root, parts, content, owner=owner)
            disk.wrote(volume.id, len(content) - replaced)
            ops.hand_new(root, parts, owner)

        await self._light(ref, write)

    async def list(self, ref: str, parts: Parts) -> list[ops.Entry]:
        return await self._light(ref, ops.list_dir, parts)

    async def delete(self, ref: str, parts: Parts) -> None:
        self._refuse_denied(ref, parts)
        await self._heavy(ref, ops.delete, parts)

    async def read(self, ref: str, parts: Parts) -> FileStream:
        self._refuse_denied(ref, parts, folder=False)
        fd, size = await self._light(ref, ops.open_for_read, parts)
        return FileStream(self._volumes, fd, size)

    async def upload(
        self,
        ref: str,
        parts: Parts,
        chunks: AsyncIterable[bytes],
        *,
        limit: int,
        declared_length: int | None = None,
        overwrite: bool = True,
    ) -> None:
        """Write the file from ``chunks``; it appears whole on success, never in part.

        Raises :class:`PayloadTooLarge` when ``declared_length`` or the bytes received
        exceed ``limit`` (then nothing was written), and :class:`FileExists` when a file
        is at ``parts`` and ``overwrite`` is false.
        """
        if declared_length is not None and declared_length > limit:
            raise PayloadTooLarge()
        self._refuse_denied(ref, parts, folder=False)
        volume = self._volumes.resolve(ref)
        root = await self._volumes.run(Root, volume.path)
        try:
            owner = self._owner_of(volume.id)
            replaced = await self._volumes.run(ops.regular_size, root, parts)
            room = await self._volumes.run(self.disk.room, volume.ref)
            if room is not None:
                room += replaced
                if declared_length is not None and declared_length > room:
                    raise DiskLimitExceeded()
            writer = await self._volumes.run(ops.AtomicWriter, root, parts, replace=overwrite)
            try:
                with self._limited(volume.id):
                    total = 0
                    pending = bytearray()
                    async for chunk in chunks:
                        total += len(chunk)
                        if total > limit:
                            raise PayloadTooLarge()
                        if room is not None and total > room:
                            raise DiskLimitExceeded()  # the stream stops at the limit
                        pending += chunk
                        if len(pending) >= UPLOAD_CHUNK:
                            await self._volumes.run(writer.write, bytes(pending))
                            pending.clear()
                    if pending:
                        await self._volumes.run(writer.write, bytes(pending))
                    await self._volumes.run(writer.commit)
                await self._volumes.run(ops.hand_new, root, parts, owner)
            except BaseException:
                await self._volumes.run(writer.abort)
                raise
            self.disk.wrote(volume.id, total - replaced)
        finally:
            root.close()

    async def lstat(self, ref: str, parts: Parts) -> os.stat_result | None:
        """What is at ``parts`` (a link as itself), or None; a link on the way is 400."""
        return await self._light(ref, ops.root_lstat, parts)

    async def make_folder(self, ref: str, parts: Parts) -> None:
        self._refuse_denied(ref, parts, folder=True)
        owner = self._owner(ref)
        await self._light(ref, _made, ops.make_folder, parts, owner=owner)

    async def copy(self, ref: str, source: Parts, target: Parts, *, overwrite: bool) -> None:
        self._refuse_denied(ref, source, target)
        disk = self.disk
        volume = self._volumes.resolve(ref)
        owner = self._owner_of(volume.id)

        def copy(root: Root) -> None:
            adding = ops.size_of(root, source)
            with self._limited(volume.id):
                disk.check(volume.ref, adding)
                ops.copy(root, source, target, overwrite=overwrite)
            disk.wrote(volume.id, adding)
            ops.hand_new(root, target, owner)

        await self._heavy(ref, copy)

    async def move(self, ref: str, source: Parts, target: Parts, *, overwrite: bool) -> None:
        self._refuse_denied(ref, source, target)
        await self._heavy(ref, ops.move, source, target, overwrite=overwrite)

    async def chmod(self, ref: str, parts: Parts, mode: int) -> None:
        self._refuse_denied(ref, parts)
        await self._light(ref, ops.change_mode, parts, mode)

    async def search(self, ref: str, parts: Parts, query: SearchQuery) -> SearchResult:
        """Entries below ``parts`` matching ``query``, within its caps (never follows links)."""
        return await self._heavy(ref, search, parts, query)

    # -- archives --------------------------------------------------------------------

    async def compress(
        self,
        ref: str,
        *,
        sources: builtins.list[Parts],
        output: Parts,
        fmt: ArchiveFormat,
        overwrite: bool,
    ) -> tuple[Parts, int]:
        """Write an archive of ``sources`` (default: the whole volume); its parts and size.

        Denied sources and outputs are refused; denied entries below a source are left out.
        """
        self._refuse_denied(ref, *sources)
        self._refuse_denied(ref, archive_parts(output, fmt), folder=False)
        disk = self.disk
        volume = self._volumes.resolve(ref)
        owner = self._owner_of(volume.id)
        leave_out = self._leave_out(volume.id)

        def work(root: Root) -> tuple[Parts, int]:
            with self._limited(volume.id):
                made = compress(
                    root,
                    sources=sources,
                    output=output,
                    fmt=fmt,
                    overwrite=overwrite,
                    room=disk.room(volume.ref),
                    leave_out=leave_out,
                )
            disk.wrote(volume.id, made[1])
            ops.hand_new(root, made[0], owner)
            return made

        return await self._heavy(ref, work)

    async def extract(
        self, ref: str, *, archive: Parts, destination: Parts, overwrite: bool
    ) -> ExtractReport:
        """Extract an archive of the volume into ``destination`` within the archive limits.

        What it made goes to the volume's user (the destination folder is walked once); the
        expanded size counts against the disk limit as it is written. A denied archive or
        destination is refused; denied entries are skipped (and reported).
        """
        self._refuse_denied(ref, archive, folder=False)
        self._refuse_denied(ref, destination, folder=True)
        disk = self.disk
        volume = self._volumes.resolve(ref)
        owner = self._owner_of(volume.id)
        leave_out = self._leave_out(volume.id, destination)

        def work(root: Root) -> ExtractReport:
            limits = dataclasses.replace(self._volumes.limits, disk_room=disk.room(volume.ref))
            with self._limited(volume.id):
                report = extract(
                    root,
                    archive=archive,
                    destination=destination,
                    limits=limits,
                    overwrite=overwrite,
                    leave_out=leave_out,
                )
            disk.wrote(volume.id, report.bytes)
            if owner is not None:
                if destination:
                    ops.hand_new(root, destination, owner)
                else:
                    ops.hand_root(root, owner)
            return report

        return await self._heavy(ref, work)

    @contextlib.contextmanager
    def _limited(self, volume_id: str) -> Iterator[None]:
        """The kernel's ENOSPC/EDQUOT on a volume with a limit is that limit."""
        try:
            yield
        except DiskLimitExceeded:
            raise
        except InsufficientStorage as exc:
            if self.disk.limit(volume_id) is not None:
                raise DiskLimitExceeded() from exc
            raise

    # -- threads ---------------------------------------------------------------------

    def _bind(
        self, ref: str, fn: Callable[Concatenate[Root, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Callable[[], T]:
        """``fn(root, ...)`` on the volume's root, opened and closed in the worker thread."""

        def work() -> T:
            with self._volumes.open(ref) as root:
                return fn(root, *args, **kwargs)

        return work

    async def _light(
        self, ref: str, fn: Callable[Concatenate[Root, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._volumes.run(self._bind(ref, fn, *args, **kwargs))

    async def _heavy(
        self, ref: str, fn: Callable[Concatenate[Root, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._volumes.run_heavy(self._bind(ref, fn, *args, **kwargs))


def _made(
    root: Root,
    make: Callable[..., None],
    /,
    *args: object,
    owner: tuple[int, int] | None,
    made: Parts | None = None,
    **kwargs: object,
) -> None:
    make(root, *args, **kwargs)
    target = made if made is not None else args[0]
    assert isinstance(target, tuple)
    ops.hand_new(root, target, owner)
