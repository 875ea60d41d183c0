"""Restores: the backup's archive through the hardened extractor, staged, then swapped in.

The archive bytes are first written to a temporary file, then
:func:`lightd.fs.archive.extract` (the extractor ``decompress`` uses: no traversal, no
link escapes, limits) unpacks them. Without ``truncate`` it extracts into the volume
(files of the backup replace their namesakes, other files stay). With ``truncate`` it
extracts into a staging folder beside the volume on the same file system
(``<volumes>/.lightd-restore-*``) and swaps the two folders in one atomic
``renameat2(RENAME_EXCHANGE)``; the old tree is then deleted. A failed or killed restore
therefore leaves the old files (a leftover staging folder is removed at the next start).
Blocking: run in a worker thread. This module must not know about records or HTTP.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from lightd.backups.local import storage_error
from lightd.backups.walk import Meter
from lightd.errors import LightdError
from lightd.fs.archive import ArchiveLimits, ExtractReport, extract
from lightd.fs.beneath import Root, closing_fd
from lightd.fs.ops import WRITE_FLAGS, discard, temp_name

STAGING_PREFIX = ".lightd-restore-"
CHUNK = 1024 * 1024
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.renameat2(
        AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _write_source(
    dir_fd: int, name: str, source: Iterable[bytes], meter: Meter, link: Path | None
) -> None:
    if link is not None:
        try:  # the stored archive itself, when it is on the same file system (read only)
            os.link(link, name, dst_dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            pass
        else:
            # Progress, and the pace of backups.write_limit_mib_s, as if it were copied.
            left = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
            while left > 0:
                meter.count(min(left, CHUNK))
                left -= CHUNK
            return
    try:
        with closing_fd(os.open(name, WRITE_FLAGS, 0o600, dir_fd=dir_fd)) as fd:
            for chunk in source:
                meter.count(len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
    except OSError as exc:
        raise storage_error(exc) from exc


def _extract_here(
    root: Root, source: Iterable[bytes], meter: Meter, limits: ArchiveLimits, link: Path | None
) -> ExtractReport:
    temp = temp_name()
    try:
        _write_source(root.fd, temp, source, meter, link)
        meter.check()
        return extract(root, archive=(temp,), destination=(), limits=limits, overwrite=True)
    finally:
        discard(root, temp)


def restore(
    volume_path: Path,
    source: Iterable[bytes],
    *,
    truncate: bool,
    limits: ArchiveLimits,
    meter: Meter,
    link: Path | None = None,
) -> Path | None:
    """Restore; returns the folder now holding the old tree (truncate), to be deleted."""
    if not truncate:
        with Root(volume_path) as root:
            _extract_here(root, source, meter, limits, link)
        return None
    staging = volume_path.parent / f"{STAGING_PREFIX}{volume_path.name}-{secrets.token_hex(4)}"
    try:
        os.mkdir(staging, 0o700)
        with Root(staging) as root:
            _extract_here(root, source, meter, limits, link)
        meter.check()
        info = os.stat(volume_path, follow_symlinks=False)
        os.chown(staging, info.st_uid, info.st_gid, follow_symlinks=False)
        os.chmod(staging, info.st_mode & 0o7777, follow_symlinks=False)
        _exchange(staging, volume_path)
    except BaseException as exc:
        with contextlib.suppress(OSError, LightdError):
            shutil.rmtree(staging)
        if isinstance(exc, OSError):
            raise storage_error(exc) from exc
        raise
    return staging  # the old tree now


def remove_tree(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)


def sweep_staging(volumes_root: Path) -> int:
    """Remove staging folders a killed restore left beside the volumes."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(volumes_root):
            if name.startswith(STAGING_PREFIX):
                with contextlib.suppress(OSError):
                    shutil.rmtree(volumes_root / name)
                    removed += 1
    return removed
