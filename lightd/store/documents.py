"""Atomic JSON documents in one folder.

Documents are written with orjson (two-space indent, sorted keys, trailing newline) so
that Git diffs stay small, and replaced atomically: temp file in the same folder, fsync,
``os.replace``, fsync the folder (records lightd can rebuild skip the fsyncs). A reader
therefore sees the old or the new version, never a mix. One writer at a time per
document (a lock per name), and a content hash per document so that writing identical
content is recognised as no change and touches nothing on disk.

The store is blocking and thread-safe; async callers run it with ``asyncio.to_thread``.
It must not interpret documents (validation belongs to ``lightd.spec``) and must not
watch the folder (hints come from ``lightd.store.watch``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from lightd.errors import InsufficientStorage, InvalidField, StoreError

TEMP_SUFFIX = ".lightd-tmp"
_ENCODE_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def encode_document(value: Any) -> bytes:
    """The canonical bytes of a document: the only encoding lightd writes."""
    return orjson.dumps(value, option=_ENCODE_OPTIONS)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError, action: str, name: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage()
    return StoreError(f"Database operation failed: cannot {action} {name}: {exc.strerror}")


class DocumentStore:
    """JSON documents under ``root``, addressed by relative names like ``containers/a.json``."""

    def __init__(self, root: Path, *, file_mode: int = 0o644) -> None:
        self.root = root
        self._file_mode = file_mode
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def path_of(self, name: str) -> Path:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\x00" in name:
            raise InvalidField("name", f"invalid document name {name!r}")
        return self.root.joinpath(*pure.parts)

    def lock(self, name: str) -> threading.Lock:
        """The lock that serialises writers of one document (callers may hold it longer)."""
        with self._locks_guard:
            found = self._locks.get(name)
            if found is None:
                found = self._locks[name] = threading.Lock()
            return found

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self.path_of(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(exc, "read", name) from exc

    def read(self, name: str) -> Any | None:
        """The parsed document, or None when it does not exist."""
        raw = self.read_bytes(name)
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"Database operation failed: {name} is not valid JSON") from exc

    def digest_of(self, name: str) -> str | None:
        raw = self.read_bytes(name)
        return None if raw is None else digest(raw)

    def write(self, name: str, value: Any, *, durable: bool = True) -> bool:
        """Write ``value`` atomically; False when the stored content was already identical.

        ``durable=False`` skips the two fsyncs: the replace stays atomic for readers and
        against a crash of the process, but a power loss may keep the previous version.
        Only for records lightd can rebuild (observed state), never for what a user wrote.
        """
        return self.write_bytes(name, encode_document(value), durable=durable)

    def write_bytes(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        path = self.path_of(name)
        new_digest = digest(data)
        with self.lock(name):
            # Always compare with the file itself: a person may have edited it.
            if self.digest_of(name) == new_digest:
                return False
            try:
                self._replace(path, data, durable=durable)
            except OSError as exc:
                raise _storage_error(exc, "write", name) from exc
            return True

    def _replace(self, path: Path, data: bytes, *, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), self._file_mode)
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        if durable:
            _fsync_dir(path.parent)

    def delete(self, name: str) -> bool:
        """Remove a document; False when it did not exist."""
        path = self.path_of(name)
        with self.lock(name):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _storage_error(exc, "delete", name) from exc
            _fsync_dir(path.parent)
            return True

    def names(self, folder: str = "", suffix: str = ".json") -> list[str]:
        """Names of the documents directly in ``folder`` (temp files excluded), sorted."""
        base = self.path_of(folder) if folder else self.root
        try:
            entries = sorted(os.listdir(base))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _storage_error(exc, "list", folder or ".") from exc
        prefix = f"{folder}/" if folder else ""
        return [
            prefix + entry
            for entry in entries
            if entry.endswith(suffix) and not entry.startswith(".")
        ]

    def sweep_temp_files(self) -> int:
        """Remove temp files a killed writer left behind; returns how many."""
        removed = 0
        for path in self._walk_temp():
            try:
                path.unlink()
                removed += 1
            except OSError:
                continue
        return removed

    def _walk_temp(self) -> Iterator[Path]:
        if not self.root.exists():
            return
        for dirpath, _dirs, files in os.walk(self.root):
            for entry in files:
                if entry.endswith(TEMP_SUFFIX):
                    yield Path(dirpath) / entry
