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


def _write_source(dir_fd: int, name: str, source: Iterable[bytes], meter: Meter) -> None:
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
    root: Root, source: Iterable[bytes], meter: Meter, limits: ArchiveLimits
) -> ExtractReport:
    temp = temp_name()
    try:
        _write_source(root.fd, temp, source, meter)
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
) -> ExtractReport:
    if not truncate:
        with Root(volume_path) as root:
            return _extract_here(root, source, meter, limits)
    staging = volume_path.parent / f"{STAGING_PREFIX}{volume_path.name}-{secrets.token_hex(4)}"
    try:
        os.mkdir(staging, 0o700)
        with Root(staging) as root:
            report = _extract_here(root, source, meter, limits)
        meter.check()
        info = os.stat(volume_path, follow_symlinks=False)
        os.chown(staging, info.st_uid, info.st_gid, follow_symlinks=False)
        os.chmod(staging, info.st_mode & 0o7777, follow_symlinks=False)
        _exchange(staging, volume_path)
    except OSError as exc:
        raise storage_error(exc) from exc
    finally:
        with contextlib.suppress(OSError, LightdError):
            shutil.rmtree(staging)  # the staged tree, or the old one after the swap
    return report


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
