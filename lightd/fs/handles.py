"""Descriptor-level file operations for protocol servers (SFTP) inside one volume.

The REST file API works on whole files; a protocol like SFTP works on open handles
(read at an offset, write at an offset, list a folder chunk by chunk) and on single
entries (lstat, readlink, rename without replacing). This module gives those on top of
the same descriptor walk (:mod:`lightd.fs.beneath`): every entry is reached with
``O_NOFOLLOW`` from the volume root's descriptor, writes go to a temporary entry in the
volume root renamed into place on :meth:`Upload.commit`, and symlinks are followed only
*lexically inside the volume* (:func:`resolve`): a link whose target leaves the volume
is :class:`~lightd.errors.PathTraversal`, and because the resolved parts are walked
again with ``O_NOFOLLOW``, a link swapped in meanwhile is refused, never followed.

Functions are blocking (callers run the slow ones in threads) and must not know about
any protocol; they take parsed parts, never a path string of the caller.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from lightd.errors import FileExists, FileNotFound, InvalidRequest, PathTraversal
from lightd.fs.beneath import (
    DIR_MODE,
    FILE_MODE,
    READ_FLAGS,
    Root,
    lstat_at,
    translate,
)
from lightd.fs.ops import change_mode, copy_data, guarded, root_lstat, stat_of, temp_name
from lightd.fs.paths import MAX_NAME_BYTES, TEMP_PREFIX, Parts, display

# Links followed in one resolution, like the kernel's MAXSYMLINKS.
MAX_LINK_HOPS = 40
UPLOAD_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Mode bits a client may set: permissions only (no setuid, setgid or sticky bit).
SETTABLE_MODE = 0o777


def _readlink(root: Root, parts: Parts) -> str:
    with guarded(parts, writing=False), root.parent(parts) as (dir_fd, name):
        return os.readlink(name, dir_fd=dir_fd)


def _one_hop(entry: Parts, target: str) -> Parts | None:
    """Where one relative link at ``entry`` points, applied as text; None if it climbs out.

    Only for :func:`resolve`, which looks at every component on disk in turn, so the
    links met later are followed one hop at a time as the kernel does.
    """
    if not target or target.startswith("/") or "\x00" in target:
        return None
    parts = list(entry[:-1])
    for name in target.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(name)
    return tuple(parts)


def link_target_parts(entry: Parts, target: str, *, mount: str = "") -> Parts:
    """Where a link at ``entry`` pointing to ``target`` leads, inside the volume only.

    An absolute target is accepted only below ``mount`` (the volume's path inside the
    container, e.g. ``/home/container``). Anything else is PathTraversal.
    """
    if mount and (target == mount or target.startswith(mount.rstrip("/") + "/")):
        target = target[len(mount) :].lstrip("/") or "."
        entry = ("",)  # relative to the volume root
    found = _one_hop(entry, target)
    if found is None:
        raise PathTraversal()
    if any(name.startswith(TEMP_PREFIX) for name in found):
        raise PathTraversal()
    return found


def resolve(root: Root, parts: Parts, *, follow_last: bool = True, mount: str = "") -> Parts:
    """``parts`` with every symlink replaced by its target, all inside the volume.

    Components are looked at one by one (lstat through the descriptor walk); a link is
    read and its target applied lexically; a target outside the volume, a missing
    intermediate folder's link target or more than :data:`MAX_LINK_HOPS` links is
    PathTraversal. With ``follow_last=False`` the final name is kept as it is (lstat).
    Missing entries end the resolution: the rest is returned unchanged.
    """
    pending = list(parts)
    done: list[str] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        here = (*done, name)
        if not pending and not follow_last:
            done.append(name)
            break
        with guarded(here, writing=False):
            try:
                found = root.lstat(here)
            except PathTraversal:
                raise
            except (FileNotFound, InvalidRequest):
                found = None
        if found is None or not stat.S_ISLNK(found.st_mode):
            done.append(name)
            if found is None:
                done.extend(pending)
                break
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise PathTraversal()
        target = link_target_parts(here, _readlink(root, here), mount=mount)
        done = []
        pending = [*target, *pending]
    return tuple(done)


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


class Upload:
    """A file written at offsets under a temporary name in the volume root.

    The target is untouched until :meth:`commit` renames the temporary entry over it
    (keeping an existing file's mode); :meth:`abort`, a crash or a killed session leave
    the old file, and the temporary entry is removed (or swept at the next start).
    ``keep`` starts from the current content (a write without truncation);
    ``exclusive`` refuses an existing target, at open and again at commit.
    """

    def __init__(self, root: Root, parts: Parts, *, keep: bool, exclusive: bool) -> None:
        if not parts:
            raise InvalidRequest("Invalid path: the volume root cannot be used here")
        self.root = root
        self.parts = parts
        self.exclusive = exclusive
        # Permission bits to give the file at commit (None: keep the old file's, or 0644).
        self.mode: int | None = None
        existing = self._target()
        if existing is not None:
            if exclusive:
                raise FileExists()
            if stat.S_ISDIR(existing.st_mode):
                raise FileExists(f"A folder exists at {display(parts)}")
            if not stat.S_ISREG(existing.st_mode):
                raise PathTraversal()
        self.temp = temp_name()
        with guarded(parts):
            self.fd = os.open(self.temp, UPLOAD_FLAGS, FILE_MODE, dir_fd=root.fd)
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

    def _target(self) -> os.stat_result | None:
        with guarded(self.parts), self.root.parent(self.parts) as (dir_fd, name):
            return lstat_at(dir_fd, name)

    def pread(self, size: int, offset: int) -> bytes:
        with guarded(self.parts, writing=False):
            return os.pread(self.fd, size, offset)

    def pwrite(self, data: bytes, offset: int) -> int:
        view = memoryview(data)
        done = 0
        with guarded(self.parts):
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        return done

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def commit(self) -> None:
        try:
            with guarded(self.parts):
                os.fsync(self.fd)
                with self.root.parent(self.parts) as (dir_fd, name):
                    old = lstat_at(dir_fd, name)
                    if old is not None and (self.exclusive or stat.S_ISDIR(old.st_mode)):
                        raise FileExists()
                    if old is not None and not stat.S_ISREG(old.st_mode):
                        # A link (or other entry) made meanwhile is never replaced.
                        raise PathTraversal()
                    mode = FILE_MODE
                    if self.mode is not None:
                        mode = self.mode & SETTABLE_MODE
                    elif old is not None and stat.S_ISREG(old.st_mode):
                        mode = stat.S_IMODE(old.st_mode) & SETTABLE_MODE
                    os.fchmod(self.fd, mode)
                    if self.exclusive:
                        os.link(self.temp, name, src_dir_fd=self.root.fd, dst_dir_fd=dir_fd)
                        os.unlink(self.temp, dir_fd=self.root.fd)
                    else:
                        os.rename(self.temp, name, src_dir_fd=self.root.fd, dst_dir_fd=dir_fd)
        except BaseException:
            self.abort()
            raise
        os.close(self.fd)
        self.fd = -1

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
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


def relative_target(link: Parts, target: Parts) -> str:
    """The relative link text that leads from ``link`` to ``target``."""
    base = list(link[:-1])
    common = 0
    while common < min(len(base), len(target)) and base[common] == target[common]:
        common += 1
    steps = [".."] * (len(base) - common) + list(target[common:])
    return "/".join(steps) or "."


def symlink(root: Root, link: Parts, target: Parts) -> None:
    """A new symlink at ``link`` to ``target`` (parts inside the volume), stored relative."""
    if not link:
        raise InvalidRequest("Invalid path: the volume root cannot be replaced")
    text = relative_target(link, target)
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
    "link_target_parts",
    "list_chunks",
    "lstat",
    "lstat_or_none",
    "make_dir",
    "open_listing",
    "open_read",
    "readlink",
    "relative_target",
    "remove_dir",
    "remove_file",
    "rename",
    "resolve",
    "set_mode",
    "statvfs",
    "symlink",
    "truncate",
]
