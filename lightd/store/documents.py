"""Atomic JSON documents in one folder.

Documents are written with orjson (two-space indent, sorted keys, trailing newline) so
that Git diffs stay small, and replaced atomically: temp file in the same folder, fsync,
``os.replace``, fsync the folder (records lightd can rebuild skip the fsyncs). A reader
therefore sees the old or the new version, never a mix. Durable writes that arrive
together share a group commit: one writer leads, stages every waiting document (temp
file, fsync), replaces them all and fsyncs each folder once; each writer returns only
after its own document is durable, and a failing document fails only its own writer.
One writer at a time per document (a lock per name), and a content hash per document so
that writing identical content is recognised as no change and touches nothing on disk.

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
from dataclasses import dataclass, field
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


@dataclass(eq=False)
class _Waiting:
    """One durable replace waiting for a group commit."""

    path: Path
    data: bytes
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    lead: bool = False  # woken to lead the next group, not because it is done


class DocumentStore:
    """JSON documents under ``root``, addressed by relative names like ``containers/a.json``."""

    def __init__(self, root: Path, *, file_mode: int = 0o644) -> None:
        self.root = root
        self._file_mode = file_mode
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._group: list[_Waiting] = []
        self._group_guard = threading.Lock()
        self._group_leading = False
        # Groups committed and fsyncs issued by group commits (read by tests and benches).
        self.groups = 0
        self.group_fsyncs = 0

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

    def write(self, name: str, value: Any, *, durable: bool = True, compare: bool = True) -> bool:
        """Write ``value`` atomically; False when the stored content was already identical.

        ``durable=False`` skips the two fsyncs: the replace stays atomic for readers and
        against a crash of the process, but a power loss may keep the previous version.
        Only for records lightd can rebuild (observed state), never for what a user wrote.
        ``compare=False`` writes without reading the stored version first: only for
        records no person edits and whose writer knows the content changed.
        """
        return self.write_bytes(name, encode_document(value), durable=durable, compare=compare)

    def write_bytes(
        self, name: str, data: bytes, *, durable: bool = True, compare: bool = True
    ) -> bool:
        path = self.path_of(name)
        with self.lock(name):
            # Always compare with the file itself: a person may have edited it.
            if compare and self.digest_of(name) == digest(data):
                return False
            try:
                self._replace(path, data, durable=durable)
            except OSError as exc:
                raise _storage_error(exc, "write", name) from exc
            return True

    def _replace(self, path: Path, data: bytes, *, durable: bool = True) -> None:
        if durable:
            self._replace_grouped(path, data)
            return
        tmp_name = self._stage(path, data, durable=False)
        try:
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def _stage(self, path: Path, data: bytes, *, durable: bool) -> str:
        """A temp file beside ``path`` holding ``data`` (fsynced when ``durable``)."""
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
                    self.group_fsyncs += 1
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return tmp_name

    def _replace_grouped(self, path: Path, data: bytes) -> None:
        """Replace ``path`` durably, in a group with the writers waiting meanwhile.

        The caller holds the document's lock, so one group never holds two versions
        of one document. The first writer to find no group under way leads: it commits
        what is waiting, then wakes the first writer that came meanwhile to lead the
        next group (so no writer waits behind an endless stream of others).
        """
        mine = _Waiting(path, data)
        with self._group_guard:
            self._group.append(mine)
            lead = not self._group_leading
            self._group_leading = True
        while not lead:
            mine.done.wait()
            if not mine.lead:
                break
            mine.lead, lead = False, True
            mine.done.clear()
        if lead:
            with self._group_guard:
                batch, self._group = self._group, []
            try:
                self._commit(batch)
            finally:
                with self._group_guard:
                    if self._group:
                        nxt = self._group[0]
                        nxt.lead = True
                        nxt.done.set()
                    else:
                        self._group_leading = False
        if mine.error is not None:
            raise mine.error

    def _commit(self, batch: list[_Waiting]) -> None:
        """Stage, replace and make durable every document of ``batch``; each failure is
        its own document's (recorded on it), the others go on."""
        staged: list[tuple[_Waiting, str]] = []
        finished = False
        try:
            for item in batch:
                try:
                    staged.append((item, self._stage(item.path, item.data, durable=True)))
                except BaseException as exc:
                    item.error = exc
            replaced: list[_Waiting] = []
            for item, tmp_name in staged:
                try:
                    os.replace(tmp_name, item.path)
                    replaced.append(item)
                except BaseException as exc:
                    item.error = exc
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp_name)
            for folder in sorted({item.path.parent for item in replaced}):
                try:
                    _fsync_dir(folder)
                    self.group_fsyncs += 1
                except BaseException as exc:
                    for item in replaced:
                        if item.path.parent == folder:
                            item.error = exc
            self.groups += 1
            finished = True
        finally:
            for item in batch:
                if not finished and item.error is None:
                    # The leader was interrupted: not known durable, so not answered so.
                    item.error = OSError(errno.EIO, "the group commit was interrupted")
                item.done.set()

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
