"""Archives in a local folder (``backups.local_dir``), published atomically.

A backup is written to ``.tmp-<backup_id>.tar.gz`` (or ``.tar.zst``; created exclusively,
mode 0600), synced, then renamed to ``<backup_id>.tar.gz`` and the folder synced: an interrupted
write never appears under the final name, and :meth:`LocalStore.sweep` removes what it
left. Blocking: run in a worker thread. This module must not read volumes.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from lightd.errors import InsufficientStorage, LightdError

TEMP = ".tmp-"
SUFFIX = ".tar.gz"
SUFFIXES = (SUFFIX, ".tar.zst")
CHUNK = 1024 * 1024


def storage_error(exc: OSError) -> LightdError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage()
    return LightdError(f"Backup storage failed: {exc.strerror or exc}")


class LocalWrite:
    """One archive being written; :meth:`publish` or :meth:`discard` ends it."""

    def __init__(self, folder: Path, backup_id: str, suffix: str = SUFFIX) -> None:
        self.folder = folder
        self.final = f"{backup_id}{suffix}"
        self.temp = f"{TEMP}{backup_id}{suffix}"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.fd = os.open(
                folder / self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise storage_error(exc) from exc

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            raise storage_error(exc) from exc

    def publish(self) -> str:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.rename(self.folder / self.temp, self.folder / self.final)
            dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self.discard()
            raise storage_error(exc) from exc
        return self.final

    def discard(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.folder / self.temp)


class LocalStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def begin(self, backup_id: str, suffix: str = SUFFIX) -> LocalWrite:
        return LocalWrite(self.folder, backup_id, suffix)

    def path(self, location: str) -> Path:
        if "/" in location or location.startswith("."):
            raise LightdError("Invalid backup location")
        return self.folder / location

    def read(self, location: str) -> Iterator[bytes]:
        with open(self.path(location), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def delete(self, location: str | None, backup_id: str) -> None:
        names = [location]
        for suffix in SUFFIXES:
            names += [f"{backup_id}{suffix}", f"{TEMP}{backup_id}{suffix}"]
        for name in names:
            if name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.folder / name)

    def sweep(self) -> int:
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.folder):
                if name.startswith(TEMP):
                    with contextlib.suppress(OSError):
                        os.unlink(self.folder / name)
                        removed += 1
        return removed
