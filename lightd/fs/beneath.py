"""Descriptor walk beneath a volume root that never follows a symlink.

Every operation starts from a descriptor of the volume root and opens one name at a
time with ``O_NOFOLLOW`` relative to the previous folder's descriptor, so a symlink the
container planted (or swaps in while lightd works) can never lead outside: meeting a
symlink where a folder or file is needed is :class:`~lightd.errors.PathTraversal`.
Final names are then handled with ``*at`` calls that do not follow links either.

It also translates ``OSError`` into lightd's errors in one place. This module must not
accept a path string (callers pass parsed parts from :mod:`lightd.fs.paths`) and must
not call any path-based ``os`` function on a volume.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from lightd.errors import (
    FileExists,
    FileNotFound,
    FilePermissionDenied,
    InsufficientStorage,
    InvalidRequest,
    LightdError,
    PathTraversal,
)
from lightd.fs.paths import Parts, display

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
DIR_MODE = 0o755
FILE_MODE = 0o644


def translate(exc: OSError, parts: Parts, *, writing: bool = True) -> LightdError:
    """The lightd error for an ``OSError`` met while working on ``parts``."""
    code = exc.errno
    where = display(parts)
    if code == errno.ENOENT:
        return FileNotFound()
    if code in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage()
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        action = "write" if writing else "read"
        return FilePermissionDenied(f"Failed to {action} file: permission denied")
    if code == errno.ELOOP:
        return PathTraversal()
    if code == errno.EEXIST:
        return FileExists()
    if code == errno.ENOTEMPTY:
        return FileExists(f"Folder is not empty: {where}")
    if code == errno.ENOTDIR:
        return InvalidRequest(f"Invalid path: {where} is not a folder")
    if code == errno.EISDIR:
        return InvalidRequest(f"Invalid path: {where} is a folder")
    if code == errno.ENAMETOOLONG:
        return InvalidRequest("Invalid path: name too long")
    if code == errno.EINVAL:
        return InvalidRequest(f"Invalid path: {where}")
    if code == errno.EBUSY:
        return FileExists(f"File is busy: {where}")
    return LightdError(f"File operation failed: {exc.strerror or code}")


@contextlib.contextmanager
def closing_fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_child_dir(dir_fd: int, name: str, parts: Parts, *, create: bool) -> int:
    """Open the folder ``name`` under ``dir_fd`` without following; create it if asked."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise FileNotFound() from None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            found = lstat_at(dir_fd, name)
            if found is not None and stat.S_ISLNK(found.st_mode):
                raise PathTraversal() from exc
            if create:
                raise FileExists(f"A file is in the way of a folder: {display(parts)}") from exc
        raise translate(exc, parts) from exc
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise translate(exc, parts) from exc
    return open_child_dir(dir_fd, name, parts, create=False)


class Root:
    """An open volume root; every lookup below it goes through :meth:`open_dir`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, DIR_FLAGS)
        except OSError as exc:
            raise translate(exc, ()) from exc

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_dir(self, parts: Parts, *, create: bool = False) -> int:
        """A new descriptor of the folder at ``parts`` (the caller closes it)."""
        fd = os.dup(self.fd)
        for depth, name in enumerate(parts):
            try:
                child = open_child_dir(fd, name, parts[: depth + 1], create=create)
            finally:
                os.close(fd)
            fd = child
        return fd

    @contextlib.contextmanager
    def dir(self, parts: Parts, *, create: bool = False) -> Iterator[int]:
        with closing_fd(self.open_dir(parts, create=create)) as fd:
            yield fd

    @contextlib.contextmanager
    def parent(self, parts: Parts, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """The folder holding ``parts`` and the final name; ``parts`` must not be the root."""
        if not parts:
            raise InvalidRequest("Invalid path: the volume root cannot be used here")
        with self.dir(parts[:-1], create=create) as fd:
            yield fd, parts[-1]

    def lstat(self, parts: Parts) -> os.stat_result | None:
        """What is at ``parts`` (a symlink is reported as itself); None if nothing."""
        if not parts:
            return os.fstat(self.fd)
        try:
            with self.parent(parts) as (fd, name):
                return lstat_at(fd, name)
        except FileNotFound:
            return None
