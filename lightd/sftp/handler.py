"""The SFTP file handler: every request of a session through :mod:`lightd.fs`.

:class:`VolumeSftp` subclasses asyncssh's ``SFTPServer`` and overrides *every* method
that touches the disk (asyncssh's defaults map paths with a lexical ``chroot`` join and
follow symlinks, so a link planted in the volume would lead anywhere): paths are parsed
by :func:`lightd.fs.paths.parse_path` (the session's root ``/`` is the volume), symlinks
are followed only inside the volume (:func:`lightd.fs.handles.resolve`), and every
entry is then reached by the descriptor walk with ``O_NOFOLLOW``. Uploads are written
to a temporary entry renamed into place when the client closes the handle; a handle
left open when the session ends (killed client, revocation, lost connection) is
aborted, so the old file stays.

Reads and writes at an offset run in the session's own I/O thread
(:mod:`lightd.sftp.writebehind`; asyncssh serves a session's requests one after
another): sequential reads are read ahead, writes are answered at once and done in
order (at most 4 MiB queued per session, both together; a failed write surfaces on the
next write and at close, which then keeps the old file); everything that walks paths,
fsyncs or lists runs in a thread. Permissions (read, write, delete) are checked per
request. It must not log paths with secrets, open anything by a path string, or use
asyncssh's ``map_path``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import asyncssh
from asyncssh.constants import (
    FX_FAILURE,
    FX_FILE_ALREADY_EXISTS,
    FX_NO_SPACE_ON_FILESYSTEM,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
)

from lightd.errors import (
    DiskLimitExceeded,
    FileDenied,
    FileExists,
    FileNotFound,
    FilePermissionDenied,
    InsufficientStorage,
    LightdError,
    PathTraversal,
)
from lightd.fs import handles
from lightd.fs.beneath import Root
from lightd.fs.ops import hand_new, volume_lookup
from lightd.fs.paths import Parts, parse_path, resolve_link
from lightd.sftp.activity import Action
from lightd.sftp.rules import Operation, allowed, open_needs
from lightd.sftp.writebehind import Budget, ReadAhead, WriteBehind

if TYPE_CHECKING:
    from asyncssh import SSHServerChannel

P = ParamSpec("P")
T = TypeVar("T")

# The volume's path inside the container: absolute link targets below it stay inside.
CONTAINER_MOUNT = "/home/container"
LIST_CHUNK = 500


@dataclass
class SessionContext:
    """What a session may do, and where it reports to (built by the service)."""

    username: str
    container: str
    address: str
    permissions: frozenset[str]
    volume: Path
    touch: Callable[[], None]
    activity: Callable[[Action, str, str], None]
    listings: set[int] = field(default_factory=set)
    owner: tuple[int, int] | None = None  # uid, gid what the session makes is handed to
    # The volume's disk limit: bytes it may still take (blocking; None: no limit), and
    # the accounting of what a committed upload added.
    room: Callable[[], int | None] = lambda: None
    wrote: Callable[[int], None] = lambda _delta: None
    # (parts, folder or None) -> True when the volume's file denylist refuses the entry.
    denied: Callable[[Parts, bool | None], bool] = lambda _parts, _folder: False


def sftp_error(exc: LightdError) -> asyncssh.SFTPError:
    """The SFTP status for a lightd error (version 3 codes where they exist)."""
    if isinstance(exc, FileNotFound):
        return asyncssh.SFTPError(FX_NO_SUCH_FILE, "No such file")
    if isinstance(exc, PathTraversal | FilePermissionDenied | FileDenied):
        return asyncssh.SFTPError(FX_PERMISSION_DENIED, "Permission denied")
    if isinstance(exc, DiskLimitExceeded):
        return asyncssh.SFTPError(FX_NO_SPACE_ON_FILESYSTEM, "Disk limit exceeded")
    if isinstance(exc, InsufficientStorage):
        return asyncssh.SFTPError(FX_NO_SPACE_ON_FILESYSTEM, "No space left")
    if isinstance(exc, FileExists):
        return asyncssh.SFTPError(FX_FILE_ALREADY_EXISTS, exc.message)
    return asyncssh.SFTPError(FX_FAILURE, exc.message)


def denied() -> asyncssh.SFTPError:
    return asyncssh.SFTPError(FX_PERMISSION_DENIED, "Permission denied")


@contextlib.contextmanager
def answered() -> Iterator[None]:
    """Turn lightd and OS errors into SFTP statuses (never a traceback to the client)."""
    try:
        yield
    except asyncssh.SFTPError:
        raise
    except LightdError as exc:
        raise sftp_error(exc) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise asyncssh.SFTPError(FX_NO_SPACE_ON_FILESYSTEM, "No space left") from None
        raise asyncssh.SFTPError(FX_FAILURE, exc.strerror or "Failure") from None


def decode(path: bytes) -> str:
    try:
        return path.decode("utf-8", "strict")
    except UnicodeDecodeError:
        raise asyncssh.SFTPError(FX_FAILURE, "Invalid file name (not UTF-8)") from None


def parts_of(path: bytes) -> Parts:
    """The parts of a client path below the session root (``/`` is the volume)."""
    with answered():
        return parse_path(decode(path))


def clamp(path: bytes) -> Parts:
    """Lexical parts for ``realpath``: ``..`` at the root stays at the root (POSIX)."""
    parts: list[str] = []
    for name in decode(path).split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        parts.append(name)
    with answered():
        return parse_path("/".join(parts))


def shown(parts: Parts) -> str:
    return "/" + "/".join(parts)


class ReadHandle:
    def __init__(
        self,
        fd: int,
        parts: Parts,
        *,
        io: concurrent.futures.ThreadPoolExecutor,
        budget: Budget,
    ) -> None:
        self.fd = fd
        self.parts = parts
        self.ahead = ReadAhead(fd, io, budget, os.fstat(fd).st_size)

    def seek(self, offset: int, whence: int) -> int:
        """For asyncssh's ``ranges@asyncssh.com`` (SEEK_DATA/SEEK_HOLE on our descriptor)."""
        return os.lseek(self.fd, offset, whence)


class WriteHandle:
    def __init__(
        self,
        upload: handles.Upload,
        parts: Parts,
        *,
        append: bool,
        io: concurrent.futures.ThreadPoolExecutor,
        budget: Budget,
        room: int | None = None,
        base: int = 0,
    ) -> None:
        self.upload = upload
        self.parts = parts
        self.append = append
        self.pipe = WriteBehind(upload, io, budget)
        # The disk limit: the upload may end at most ``room`` bytes past ``base`` (the
        # size of the file it replaces); past it the upload failed and is never kept.
        self.room = room
        self.base = base
        self.end = upload.size()  # the furthest byte written so far (writes run behind)
        self.failed = False

    def reach(self, end: int) -> None:
        """Record a write up to ``end``; past the disk limit the whole upload fails."""
        if self.room is not None and end - self.base > self.room:
            self.failed = True  # nothing of it is kept, whatever the client does
            raise asyncssh.SFTPError(FX_NO_SPACE_ON_FILESYSTEM, "Disk limit exceeded")
        self.end = max(self.end, end)

    def seek(self, offset: int, whence: int) -> int:
        return os.lseek(self.upload.fd, offset, whence)


class VolumeSftp(asyncssh.SFTPServer):
    """One SFTP session on one container's volume."""

    def __init__(self, chan: SSHServerChannel[bytes], context: SessionContext) -> None:
        super().__init__(chan)
        self.context = context
        self.root = Root(context.volume)
        self._open: set[ReadHandle | WriteHandle] = set()
        self._closed = False
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._budget = Budget()

    def _io_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        """The session's I/O thread (made at its first upload, ended with the session)."""
        if self._io is None:
            self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sftp-io")
        return self._io

    # -- helpers -------------------------------------------------------------------

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.context.touch()
        with answered():
            return await asyncio.to_thread(fn, *args, **kwargs)

    def _need(self, *operations: Operation) -> None:
        self.context.touch()
        if not allowed(self.context.permissions, operations):
            raise denied()

    def _allow(self, *entries: Parts, folder: bool | None = None) -> None:
        """Permission denied when the volume's file denylist matches one of ``entries``."""
        if any(self.context.denied(parts, folder) for parts in entries):
            raise FileDenied()

    def _follow(self, parts: Parts) -> Parts:
        return handles.resolve(self.root, parts, mount=CONTAINER_MOUNT)

    def _entry(self, parts: Parts) -> Parts:
        """``parts`` with links of its folders resolved, the final name kept as itself."""
        return handles.resolve(self.root, parts, follow_last=False, mount=CONTAINER_MOUNT)

    def _ending(self) -> bool:
        """True once the session is going away (handles closed now are not committed)."""
        chan = self.channel
        return self._closed or chan.is_closing() or getattr(chan, "_recv_state", "open") != "open"

    def map_path(self, path: bytes) -> bytes:
        raise denied()  # never used: every method below works on parsed parts

    def reverse_map_path(self, path: bytes) -> bytes:
        raise denied()

    # -- names ---------------------------------------------------------------------

    async def realpath(self, path: bytes) -> bytes:
        lexical = clamp(path)

        def real() -> Parts:
            try:
                return self._follow(lexical)
            except PathTraversal:
                return lexical

        return shown(await self._run(real)).encode()

    async def stat(self, path: bytes) -> os.stat_result:
        parts = parts_of(path)
        return await self._run(lambda: handles.lstat(self.root, self._follow(parts)))

    async def lstat(self, path: bytes) -> os.stat_result:
        parts = parts_of(path)
        return await self._run(lambda: handles.lstat(self.root, self._entry(parts)))

    def fstat(self, file_obj: object) -> os.stat_result | Awaitable[os.stat_result]:
        self.context.touch()
        with answered():
            if isinstance(file_obj, ReadHandle):
                return os.fstat(file_obj.fd)
            if isinstance(file_obj, WriteHandle):
                if file_obj.pipe.pending_bytes:
                    return self._after_writes(file_obj, lambda: os.fstat(file_obj.upload.fd))
                return os.fstat(file_obj.upload.fd)
        raise asyncssh.SFTPError(FX_FAILURE, "Invalid handle")

    async def _answer(self, pending: Awaitable[T]) -> T:
        with answered():
            return await pending

    async def _after_writes(self, handle: WriteHandle, fn: Callable[[], T]) -> T:
        """``fn`` once the handle's pending writes are done (their error, if one failed)."""
        with answered():
            await handle.pipe.drain()
            return fn()

    # -- files ---------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        parts = parts_of(path)
        reading = bool(pflags & FXF_READ)
        writing = bool(pflags & (FXF_WRITE | FXF_APPEND))
        if not reading and not writing:
            reading = True
        self._need(*open_needs(reading=reading, writing=writing))
        if not writing:

            def open_reader() -> ReadHandle:
                target = self._follow(parts)
                self._allow(parts, target, folder=False)
                fd = handles.open_read(self.root, target)
                try:
                    return ReadHandle(fd, target, io=io, budget=budget)
                except BaseException:
                    os.close(fd)
                    raise

            io, budget = self._io_thread(), self._budget
            handle: ReadHandle | WriteHandle = await self._run(open_reader)
        else:
            create = bool(pflags & FXF_CREAT)
            exclusive = create and bool(pflags & FXF_EXCL)

            def open_writer() -> WriteHandle:
                target = self._entry(parts) if exclusive else self._follow(parts)
                self._allow(parts, target, folder=False)
                if not create and handles.lstat_or_none(self.root, target) is None:
                    raise FileNotFound()
                upload = handles.Upload(
                    self.root, target, keep=not pflags & FXF_TRUNC, exclusive=exclusive
                )
                if attrs.permissions is not None:
                    upload.mode = attrs.permissions
                found = handles.lstat_or_none(self.root, target)
                base = found.st_size if found is not None else 0
                return WriteHandle(
                    upload,
                    target,
                    append=bool(pflags & FXF_APPEND),
                    io=io,
                    budget=budget,
                    room=self.context.room(),
                    base=base,
                )

            io, budget = self._io_thread(), self._budget

            handle = await self._run(open_writer)
        if self._ending():
            self._discard(handle)
            raise asyncssh.SFTPError(FX_FAILURE, "Session closed")
        self._open.add(handle)
        return handle

    def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs
    ) -> object:
        raise asyncssh.SFTPError(FX_OP_UNSUPPORTED, "SFTP version 3 only")

    def read(self, file_obj: object, offset: int, size: int) -> bytes | Awaitable[bytes]:
        self.context.touch()
        with answered():
            if isinstance(file_obj, ReadHandle):
                got = file_obj.ahead.read(offset, size)
                return got if isinstance(got, bytes) else self._answer(got)
            if isinstance(file_obj, WriteHandle):
                upload = file_obj.upload
                if file_obj.pipe.pending_bytes:
                    return self._after_writes(file_obj, lambda: upload.pread(size, offset))
                return upload.pread(size, offset)
        raise asyncssh.SFTPError(FX_FAILURE, "Invalid handle")

    def write(self, file_obj: object, offset: int, data: bytes) -> int | Awaitable[int]:
        self.context.touch()
        if not isinstance(file_obj, WriteHandle):
            raise denied()
        if file_obj.failed:
            raise asyncssh.SFTPError(FX_NO_SPACE_ON_FILESYSTEM, "Disk limit exceeded")
        if file_obj.append:
            return self._append(file_obj, data)
        file_obj.reach(offset + len(data))
        with answered():
            return file_obj.pipe.write(data, offset)

    async def _append(self, handle: WriteHandle, data: bytes) -> int:
        # The end of the file is known once the writes before are done.
        with answered():
            await handle.pipe.drain()
            offset = handle.upload.size()
            handle.reach(offset + len(data))
            written = handle.pipe.write(data, offset)
            if not isinstance(written, int):
                written = await written
            await handle.pipe.drain()
            return written

    def _discard(self, handle: ReadHandle | WriteHandle) -> None:
        self._open.discard(handle)
        if isinstance(handle, ReadHandle):
            with contextlib.suppress(OSError):
                handle.ahead.close()
        else:
            handle.pipe.abort()

    async def close(self, file_obj: object) -> None:
        if not isinstance(file_obj, ReadHandle | WriteHandle) or file_obj not in self._open:
            return
        if isinstance(file_obj, ReadHandle) or self._ending():
            self._discard(file_obj)
            return
        try:
            with answered():
                await file_obj.pipe.drain()
        except BaseException:
            # A write that was answered failed: nothing is committed, the old file stays.
            self._discard(file_obj)
            raise
        if self._ending() or file_obj not in self._open:
            self._discard(file_obj)
            raise asyncssh.SFTPError(FX_FAILURE, "Session closed")
        self._open.discard(file_obj)
        if file_obj.failed:
            file_obj.upload.abort()
            raise asyncssh.SFTPError(FX_NO_SPACE_ON_FILESYSTEM, "Disk limit exceeded")
        size = await self._run(file_obj.upload.size)
        await self._run(file_obj.upload.commit)
        await self._run(hand_new, self.root, file_obj.parts, self.context.owner)
        self.context.wrote(size - file_obj.base)
        self.context.activity("sftp.upload", shown(file_obj.parts), "")

    async def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, WriteHandle):
            with answered():
                await file_obj.pipe.drain()
            await self._run(os.fsync, file_obj.upload.fd)

    # -- attributes ----------------------------------------------------------------

    def _apply(self, parts: Parts, attrs: asyncssh.SFTPAttrs) -> None:
        self._allow(parts)
        if attrs.uid is not None or attrs.gid is not None:
            raise FilePermissionDenied("Changing the owner is not allowed")
        if attrs.size is not None:
            handles.truncate(self.root, parts, attrs.size)
        if attrs.permissions is not None:
            handles.set_mode(self.root, parts, attrs.permissions)
        # Times are accepted and ignored: modes only.

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        parts = parts_of(path)
        self._need("write")
        await self._run(lambda: self._apply(self._follow(parts), attrs))

    async def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        parts = parts_of(path)
        self._need("write")
        await self._run(lambda: self._apply(self._entry(parts), attrs))

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        self._need("write")
        if attrs.uid is not None or attrs.gid is not None:
            raise denied()
        if isinstance(file_obj, WriteHandle):
            if attrs.permissions is not None:
                file_obj.upload.mode = attrs.permissions
            if attrs.size is not None:
                with answered():
                    await file_obj.pipe.drain()
                await self._run(os.ftruncate, file_obj.upload.fd, attrs.size)
            return
        if isinstance(file_obj, ReadHandle):
            if attrs.size is not None:
                raise denied()
            if attrs.permissions is not None:
                await self._run(handles.set_mode, self.root, file_obj.parts, attrs.permissions)
            return
        raise asyncssh.SFTPError(FX_FAILURE, "Invalid handle")

    # -- folders -------------------------------------------------------------------

    def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        parts = parts_of(path)
        self._need("read")
        with answered():
            target = self._follow(parts)
            fd = handles.open_listing(self.root, target)
        self.context.listings.add(fd)
        return self._listing(fd, target)

    async def _listing(self, fd: int, parts: Parts) -> AsyncIterator[asyncssh.SFTPName]:
        try:
            here = os.fstat(fd)
            yield asyncssh.SFTPName(b".", attrs=asyncssh.SFTPAttrs.from_local(here))
            up = await self._run(handles.lstat, self.root, parts[:-1]) if parts else here
            yield asyncssh.SFTPName(b"..", attrs=asyncssh.SFTPAttrs.from_local(up))
            chunks = handles.list_chunks(fd, at_root=not parts, chunk=LIST_CHUNK)
            while True:
                chunk = await self._run(next, chunks, None)
                if chunk is None:
                    break
                for name, info in chunk:
                    yield asyncssh.SFTPName(
                        name.encode("utf-8", "surrogateescape"),
                        attrs=asyncssh.SFTPAttrs.from_local(info),
                    )
        finally:
            if fd in self.context.listings:
                self.context.listings.discard(fd)
                os.close(fd)

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        parts = parts_of(path)
        self._need("write")
        mode = attrs.permissions if attrs.permissions is not None else 0o755
        entry = await self._run(self._entry, parts)
        with answered():
            self._allow(parts, entry, folder=True)
        await self._run(handles.make_dir, self.root, entry, mode)
        await self._run(hand_new, self.root, entry, self.context.owner)

    async def rmdir(self, path: bytes) -> None:
        parts = parts_of(path)
        self._need("delete")
        entry = await self._run(self._entry, parts)
        with answered():
            self._allow(parts, entry, folder=True)
        await self._run(handles.remove_dir, self.root, entry)
        self.context.activity("sftp.delete", shown(entry), "")

    async def remove(self, path: bytes) -> None:
        parts = parts_of(path)
        self._need("delete")
        entry = await self._run(self._entry, parts)
        with answered():
            self._allow(parts, entry, folder=False)
        await self._run(handles.remove_file, self.root, entry)
        self.context.activity("sftp.delete", shown(entry), "")

    async def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        source, target = parts_of(oldpath), parts_of(newpath)
        self._need("write")
        src = await self._run(self._entry, source)
        dst = await self._run(self._entry, target)
        with answered():
            self._allow(source, target, src, dst)
        if replace and "delete" not in self.context.permissions:
            exists = await self._run(handles.lstat_or_none, self.root, dst)
            if exists is not None:
                raise denied()
        await self._run(handles.rename, self.root, src, dst, replace=replace)
        self.context.activity("sftp.rename", shown(src), shown(dst))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=False)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=True)

    # -- links ---------------------------------------------------------------------

    async def readlink(self, path: bytes) -> bytes:
        parts = parts_of(path)
        self._need("read")
        target = await self._run(lambda: handles.readlink(self.root, self._entry(parts)))
        return target.encode("utf-8", "surrogateescape")

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        # asyncssh swaps OpenSSH's reversed arguments: oldpath is the target.
        link = parts_of(newpath)
        self._need("write")
        text = decode(oldpath)
        if "\x00" in text:
            raise asyncssh.SFTPError(FX_FAILURE, "Invalid link target")
        entry = await self._run(self._entry, link)
        # Judged the way the kernel will follow it: through the links already in the
        # volume, from the link's real folder (an absolute target from the volume root).
        folder = () if text.startswith("/") else entry[:-1]
        found = await self._run(
            resolve_link, folder, text.lstrip("/") or ".", volume_lookup(self.root)
        )
        if found is None:
            raise denied()
        with answered():
            target = parse_path("/".join(found)) if found else ()
            self._allow(link, entry, target)
        await self._run(handles.symlink, self.root, entry, target)
        await self._run(hand_new, self.root, entry, self.context.owner)

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPError(FX_OP_UNSUPPORTED, "Hard links are not supported")

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        raise asyncssh.SFTPError(FX_OP_UNSUPPORTED, "Locks are not supported")

    def unlock(self, file_obj: object, offset: int, length: int) -> None:
        raise asyncssh.SFTPError(FX_OP_UNSUPPORTED, "Locks are not supported")

    # -- file system ---------------------------------------------------------------

    async def statvfs(self, path: bytes) -> os.statvfs_result:
        parts = parts_of(path)

        def measure() -> os.statvfs_result:
            handles.lstat(self.root, self._follow(parts))  # the path must exist, inside
            return handles.statvfs(self.root)

        return await self._run(measure)

    async def fstatvfs(self, file_obj: object) -> os.statvfs_result:
        return await self._run(handles.statvfs, self.root)

    def exit(self) -> None:
        """The session ended: abort open uploads, close descriptors and the root."""
        self._closed = True
        for handle in list(self._open):
            self._discard(handle)
        for fd in list(self.context.listings):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.context.listings.clear()
        if self._io is not None:
            # The aborts queued above run first (they unlink temp entries relative to
            # the root, so it is closed after them, in the same thread); nothing waits.
            self._io.submit(self.root.close)
            self._io.shutdown(wait=False)
        else:
            self.root.close()

    def close_all(self) -> None:
        """Called by the service when it ends the session (revocation, idle, stop)."""
        self._closed = True
