"""Descriptor-level file operations for protocol servers (SFTP) inside one volume.

The REST file API works on whole files; a protocol like SFTP works on open handles
(read at an offset, write at an offset, list a folder chunk by chunk) and on single
entries (lstat, readlink, rename without replacing). This module gives those on top of
the same descriptor walk (:mod:`lightd.fs.beneath`): every entry is reached with
``O_NOFOLLOW`` from the volume root's descriptor, writes go through the REST API's
:class:`~lightd.fs.ops.AtomicWriter` (a temporary entry in the volume root renamed into
place on :meth:`Upload.commit`), and symlinks are followed only *inside the volume*, by
the same kernel-like walk that judges the links lightd creates
(:func:`~lightd.fs.paths.resolve_link`, see :func:`resolve`): a link whose target
leaves the volume is :class:`~lightd.errors.PathTraversal`, and because the resolved
parts are walked again with ``O_NOFOLLOW``, a link swapped in meanwhile is refused,
never followed.

Functions are blocking (callers run the slow ones in threads) and must not know about
any protocol; they take parsed parts, never a path string of the caller.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from lightd.errors import FileExists, FileNotFound, InvalidRequest, PathTraversal
from lightd.fs.beneath import (
    DIR_MODE,
    READ_FLAGS,
    Root,
    lstat_at,
    translate,
)
from lightd.fs.ops import (
    AtomicWriter,
    change_mode,
    copy_data,
    guarded,
    root_lstat,
    stat_of,
    volume_lookup,
)
from lightd.fs.paths import (
    MAX_LINK_HOPS,
    MAX_NAME_BYTES,
    TEMP_PREFIX,
    Found,
    Lookup,
    Parts,
    display,
    relative_target,
    resolve_link,
)

UPLOAD_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Mode bits a client may set: permissions only (no setuid, setgid or sticky bit).
SETTABLE_MODE = 0o777


def _readlink(root: Root, parts: Parts) -> str:
    with guarded(parts, writing=False), root.parent(parts) as (dir_fd, name):
        return os.readlink(name, dir_fd=dir_fd)


def _mounted(lookup: Lookup, mount: str) -> Lookup:
    """``lookup`` that also reads absolute link texts below ``mount`` as relative ones.

    A container sees its volume at ``mount`` (e.g. ``/home/container``), so a link it
    made to ``/home/container/x`` means the volume's ``x``: from a link at ``parts``
    that is ``../`` once per folder above it, then ``x``. Other absolute texts stay
    absolute, which :func:`~lightd.fs.paths.resolve_link` refuses.
    """
    if not mount:
        return lookup
    below = mount.rstrip("/") + "/"

    def mounted(parts: Parts) -> Found:
        found = lookup(parts)
        if found.kind == "link" and (found.target == mount or found.target.startswith(below)):
            rest = [name for name in found.target[len(mount) :].split("/") if name]
            return Found("link", "/".join([".."] * (len(parts) - 1) + rest) or ".")
        return found

    return mounted


def resolve(root: Root, parts: Parts, *, follow_last: bool = True, mount: str = "") -> Parts:
    """``parts`` with every symlink replaced by its target, all inside the volume.

    The kernel's walk of :func:`~lightd.fs.paths.resolve_link` over the volume as it is
    on disk (:func:`~lightd.fs.ops.volume_lookup`), absolute targets below ``mount``
    read as inside the volume: a target outside the volume, more than
    :data:`MAX_LINK_HOPS` links, or a temporary entry is PathTraversal. With
    ``follow_last=False`` the final name is kept as it is (lstat). Below a missing
    entry the rest is kept as names. The result is only a path: every use walks it again
    with ``O_NOFOLLOW``, so a link swapped in meanwhile is refused, never followed.
    """
    if not parts:
        return parts
    if not follow_last:
        return (*resolve(root, parts[:-1], mount=mount), parts[-1])
    found = resolve_link((), "/".join(parts), _mounted(volume_lookup(root), mount))
    if found is None or any(name.startswith(TEMP_PREFIX) for name in found):
        raise PathTraversal()
    return found


def lstat(root: Root, parts: Parts) -> os.stat_result:
    """What is at ``parts`` (a link as itself); FileNotFound if nothing."""
    return stat_of(root, parts)


def lstat_or_none(root: Root, parts: Parts) -> os.stat_result | None:
    return root_lstat(root, parts)


# -- reading ---------------------------------------------------------------------------


def open_read(root: Root, parts: Parts) -> int:
    """A blocking descriptor of the regular file at ``parts`` (the caller closes it)."""
    with guarded(parts, writing=False), root.parent(parts) as (dir_fd, name):
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidRequest(f"Invalid path: {display(parts)} is not a file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- writing ---------------------------------------------------------------------------


class Upload(AtomicWriter):
    """A file written at offsets under a temporary name in the volume root.

    :class:`~lightd.fs.ops.AtomicWriter` (the REST API's writer: the target untouched
    until :meth:`commit` renames the temporary entry over it, never over a folder or a
    link; :meth:`abort`, a crash or a killed session leave the old file, the temporary
    entry removed or swept at the next start), opened for reading too, never making
    folders. ``keep`` starts from the current content (a write without truncation);
    ``exclusive`` refuses an existing target, at open and at commit (a hard link, which
    fails if one appeared meanwhile). :attr:`mode` (permission bits only) is given at
    commit; by default the replaced file's.
    """

    flags = UPLOAD_FLAGS
    create_parents = False

    def __init__(self, root: Root, parts: Parts, *, keep: bool, exclusive: bool) -> None:
        if not parts:
            raise InvalidRequest("Invalid path: the volume root cannot be used here")
        with guarded(parts), root.parent(parts) as (dir_fd, name):
            existing = lstat_at(dir_fd, name)  # FileNotFound: the folder must exist
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            if stat.S_ISDIR(existing.st_mode):
                raise FileExists(f"A folder exists at {display(parts)}")
            raise PathTraversal()
        super().__init__(root, parts, replace=not exclusive)
        self.exclusive = exclusive
        # Permission bits to give the file at commit (None: keep the old file's, or 0644).
        self.mode: int | None = None
        try:
            if keep and existing is not None:
                source = open_read(root, parts)
                try:
                    with guarded(parts):
                        copy_data(source, self.fd)
                finally:
                    os.close(source)
        except BaseException:
            self.abort()
            raise

    def pread(self, size: int, offset: int) -> bytes:
        with guarded(self.parts, writing=False):
            return os.pread(self.fd, size, offset)

    def pwrite(self, data: bytes | memoryview, offset: int) -> int:
        view = memoryview(data)
        done = 0
        with guarded(self.parts):
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        return done

    def pwritev(self, chunks: list[bytes], offset: int) -> int:
        """Adjacent blocks from ``offset`` on, in as few system calls as the kernel allows."""
        total = sum(len(chunk) for chunk in chunks)
        with guarded(self.parts):
            done = os.pwritev(self.fd, chunks, offset)
        if done < total:  # short write: the rest one block at a time
            rest = memoryview(b"".join(chunks))[done:]
            done += self.pwrite(rest, offset + done)
        return done

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def final_mode(self, old: os.stat_result | None) -> int:
        mode = self.mode if self.mode is not None else super().final_mode(old)
        return mode & SETTABLE_MODE

    def place(self, dir_fd: int, name: str) -> None:
        if not self.exclusive:
            super().place(dir_fd, name)
            return
        os.link(self.temp, name, src_dir_fd=self.root.fd, dst_dir_fd=dir_fd)
        os.unlink(self.temp, dir_fd=self.root.fd)


# -- folders ---------------------------------------------------------------------------


def open_listing(root: Root, parts: Parts) -> int:
    """A descriptor of the folder at ``parts`` for :func:`list_chunks` (caller closes)."""
    with guarded(parts, writing=False):
        return root.open_dir(parts)


def list_chunks(
    dir_fd: int, *, at_root: bool, chunk: int = 500
) -> Iterator[list[tuple[str, os.stat_result]]]:
    """The entries of an open folder (lstat each), ``chunk`` at a time; temp entries hidden."""
    batch: list[tuple[str, os.stat_result]] = []
    with os.scandir(dir_fd) as found:
        for item in found:
            if at_root and item.name.startswith(TEMP_PREFIX):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            batch.append((item.name, info))
            if len(batch) >= chunk:
                yield batch
                batch = []
    if batch:
        yield batch


def make_dir(root: Root, parts: Parts, mode: int = DIR_MODE) -> None:
    """One new folder (its parent must exist)."""
    with guarded(parts), root.parent(parts) as (dir_fd, name):
        os.mkdir(name, mode & SETTABLE_MODE, dir_fd=dir_fd)


def remove_dir(root: Root, parts: Parts) -> None:
    """Remove an empty folder."""
    with guarded(parts), root.parent(parts) as (dir_fd, name):
        found = lstat_at(dir_fd, name)
        if found is None:
            raise FileNotFound()
        if not stat.S_ISDIR(found.st_mode):
            raise InvalidRequest(f"Invalid path: {display(parts)} is not a folder")
        os.rmdir(name, dir_fd=dir_fd)


def remove_file(root: Root, parts: Parts) -> None:
    """Remove a file or a symlink (never what a link points to); a folder is refused."""
    with guarded(parts), root.parent(parts) as (dir_fd, name):
        found = lstat_at(dir_fd, name)
        if found is None:
            raise FileNotFound()
        if stat.S_ISDIR(found.st_mode):
            raise InvalidRequest(f"Invalid path: {display(parts)} is a folder")
        os.unlink(name, dir_fd=dir_fd)


def rename(root: Root, source: Parts, target: Parts, *, replace: bool) -> bool:
    """Rename an entry; without ``replace`` an existing target is FileExists.

    Returns True when an existing target was replaced.
    """
    if not source or not target:
        raise InvalidRequest("Invalid path: the volume root cannot be renamed")
    stat_of(root, source)
    with (
        guarded(target),
        root.parent(target) as (dst_fd, dst_name),
        root.parent(source) as (src_fd, src_name),
    ):
        existing = lstat_at(dst_fd, dst_name)
        if existing is not None and not replace:
            raise FileExists()
        os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return existing is not None


# -- links, modes, file system ---------------------------------------------------------


def readlink(root: Root, parts: Parts) -> str:
    return _readlink(root, parts)


def symlink(root: Root, link: Parts, target: Parts) -> None:
    """A new symlink at ``link`` to ``target`` (parts inside the volume), stored relative."""
    if not link:
        raise InvalidRequest("Invalid path: the volume root cannot be replaced")
    text = relative_target(link[:-1], target)
    if len(text.encode()) > 4096 or any(len(n.encode()) > MAX_NAME_BYTES for n in target):
        raise InvalidRequest("Invalid path: link target too long")
    with guarded(link), root.parent(link) as (dir_fd, name):
        os.symlink(text, name, dir_fd=dir_fd)


def set_mode(root: Root, parts: Parts, mode: int) -> None:
    """Permission bits only; setuid, setgid and sticky bits are dropped."""
    change_mode(root, parts, mode & SETTABLE_MODE)


def truncate(root: Root, parts: Parts, size: int) -> None:
    """Set the size of a regular file (SFTP setstat with a size)."""
    with guarded(parts), root.parent(parts) as (dir_fd, name):
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(name, flags, dir_fd=dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidRequest(f"Invalid path: {display(parts)} is not a file")
            os.ftruncate(fd, size)
        finally:
            os.close(fd)


def statvfs(root: Root) -> os.statvfs_result:
    try:
        return os.fstatvfs(root.fd)
    except OSError as exc:
        raise translate(exc, ()) from exc


__all__ = [
    "MAX_LINK_HOPS",
    "Upload",
    "list_chunks",
    "lstat",
    "lstat_or_none",
    "make_dir",
    "open_listing",
    "open_read",
    "readlink",
    "remove_dir",
    "remove_file",
    "rename",
    "resolve",
    "set_mode",
    "statvfs",
    "symlink",
    "truncate",
]
