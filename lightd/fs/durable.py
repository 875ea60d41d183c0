"""Durability: flush a whole file system to its device before lightd promises a copy.

A transfer's target acknowledges a verified copy only once the copy is on disk, since
the source deletes its own copy on that acknowledgement. Writing a tree file by file
and ``fsync``-ing each costs one device flush per file; one ``syncfs(2)`` after the
tree is whole flushes everything of that file system at once. Blocking (callers run
it in a thread); it must not know about transfers, HTTP or the engine.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.syncfs.restype = ctypes.c_int


def sync_filesystem(path: Path) -> None:
    """Flush the file system holding ``path`` (a folder) to its device; OSError if not."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


def sync_filesystems(paths: list[Path]) -> None:
    """:func:`sync_filesystem` once per distinct file system among ``paths``."""
    seen: set[int] = set()
    for path in paths:
        device = os.stat(path).st_dev
        if device not in seen:
            seen.add(device)
            sync_filesystem(path)
