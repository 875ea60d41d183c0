"""The desired container documents (``containers/<internal_id>.json``) as lightd sees them.

Keeps the last good spec of every container: a file that does not parse or validate is
reported (file, position or field, reason) and its container keeps its last good spec.
A document whose name does not match its ``internal_id`` is invalid. Writes go through
the document store. A scan only reports what it found (changed, gone, why the folder
cannot be listed): whether a gone document's container is deleted is the deletion
guard's decision (:mod:`lightd.desired.guard`), applied with :meth:`forget` and
:meth:`hold`. It must not talk to the engine.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from lightd.desired.guard import deletion_held
from lightd.errors import StoreError
from lightd.spec.container import ContainerSpec
from lightd.spec.ids import is_internal_id
from lightd.store import DocumentStore
from lightd.store.documents import digest

FOLDER = "containers"
FULL_VOLUME_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class DocumentProblem:
    file: str
    line: int | None
    column: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        return f"{where}: {self.reason}"


def document_name(internal_id: str) -> str:
    return f"{FOLDER}/{internal_id}.json"


def _position(raw: bytes, pos: int) -> tuple[int, int]:
    before = raw[:pos]
    line = before.count(b"\n") + 1
    column = pos - (before.rfind(b"\n") + 1) + 1
    return line, column


def _line_of_key(raw: bytes, key: str) -> tuple[int | None, int | None]:
    needle = orjson.dumps(key)
    index = raw.find(needle + b":")
    if index < 0:
        index = raw.find(needle)
    if index < 0:
        return None, None
    return _position(raw, index)


def _claimed_id(raw: bytes) -> str | None:
    """The ``internal_id`` a document names, if it names one at all."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = data.get("internal_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and is_internal_id(value) else None


def parse_document(
    name: str, raw: bytes, *, expected_id: str | None
) -> ContainerSpec | DocumentProblem:
    """Parse one container document, or say precisely what is wrong with it."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        line, column = exc.lineno, exc.colno
        return DocumentProblem(name, line, column, f"not valid JSON: {exc.msg}")
    if not isinstance(data, dict):
        return DocumentProblem(name, 1, 1, "a container document must be a JSON object")
    try:
        spec = ContainerSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        top = str(first["loc"][0]) if first["loc"] else ""
        where: tuple[int | None, int | None] = _line_of_key(raw, top) if top else (None, None)
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "field required"
        elif first["type"] == "extra_forbidden":
            message = "unknown field"
        return DocumentProblem(name, where[0], where[1], f"{loc}: {message}")
    if expected_id is not None and spec.internal_id != expected_id:
        key_line, key_column = _line_of_key(raw, "internal_id")
        return DocumentProblem(
            name,
            key_line,
            key_column,
            f"internal_id {spec.internal_id!r} does not match the file name {expected_id!r}",
        )
    return spec


@dataclass(frozen=True)
class ScanResult:
    """What one scan found.

    ``changed`` are the containers whose document content changed; ``gone`` those whose
    document disappeared (their last good spec is kept until :meth:`forget`);
    ``folder_problem`` says why the folder could not be listed, if it could not (then
    every known container counts as gone).
    """

    changed: set[str]
    gone: set[str] = field(default_factory=set)
    folder_problem: str | None = None


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a file's content changed without reading it (None: cannot stat it)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def full_volume_id(ref: str, resolve: Callable[[str], str | None]) -> str | None:
    """A document's ``volume_id`` as the volume's full id: a full UUID as it is (lowercase,
    no disk access), a prefix through ``resolve`` (None while it names no volume)."""
    ref = ref.lower()
    if FULL_VOLUME_ID.fullmatch(ref):
        return ref
    return resolve(ref)


class DesiredContainers:
    """Last good specs, per-file problems and content digests of the container folder."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._specs: dict[str, ContainerSpec] = {}
        self._problems: dict[str, DocumentProblem] = {}
        self._digests: dict[str, str] = {}
        # file key -> the internal_id its content names when that differs from the name:
        # a renamed document still holds its container (nothing is deleted because of it).
        self._claims: dict[str, str] = {}
        # internal_ids whose deletion is held back by the deletion guard.
        self._held: set[str] = set()
        self._present: set[str] = set()  # file keys seen by the last scan
        # Specs admitted by the API whose write is under way: their ports count as bound
        # and their ids as taken (not visible to readers nor to the reconciler).
        self._staged: dict[str, ContainerSpec] = {}
        # (inode, size, mtime, ctime) of each file when last read: a scan reads only the
        # files whose identity changed (atomic writes make a new inode every time).
        self._stats: dict[str, tuple[int, int, int, int]] = {}
        # Every change counts one up: what is derived from all specs is rebuilt only then.
        self._generation = 0
        self._bindings: tuple[int, dict[tuple[str, int, str], str]] = (-1, {})
        self._claimed_ids: frozenset[str] = frozenset()  # replaced whole, read lock-free
        # internal_id -> the full id of the volume its document names, normalised once
        # when the document is read or written (a prefix resolved through
        # ``resolve_volume``); None while a prefix names no volume yet.
        self._volume_ids: dict[str, str | None] = {}
        self._volume_index: tuple[int, dict[str, list[str]]] = (-1, {})
        # A volume prefix -> its full id, or None (set by the daemon; blocking).
        self.resolve_volume: Callable[[str], str | None] = lambda _ref: None
        self._lock = threading.Lock()
        # Called (from any thread, outside the lock) with each internal_id whose spec changed.
        self.listeners: list[Callable[[str], None]] = []

    def _changed(self, keys: set[str]) -> None:
        if keys:
            self._generation += 1
        for key in sorted(keys):
            if key.startswith("invalid:"):
                continue
            for listener in self.listeners:
                listener(key)

    def get(self, internal_id: str) -> ContainerSpec | None:
        return self._specs.get(internal_id)

    def bindings(self) -> Mapping[tuple[str, int, str], str]:
        """(ip, port, protocol) -> internal_id of every spec and staged spec; the index of
        the specs is rebuilt only after a change (the pool and the node watch ask on every
        write: not a walk of every document), the few staged ones are laid over it."""
        generation, found = self._bindings
        if generation != self._generation:
            generation = self._generation
            found = {}
            for key in sorted(self._specs):
                spec = self._specs.get(key)
                if spec is None:
                    continue
                for binding in spec.ports:
                    found[(binding.ip, binding.port, binding.protocol)] = spec.internal_id
            self._bindings = (generation, found)
        staged = tuple(self._staged.values())
        if not staged:
            return found
        merged = dict(found)
        for spec in staged:
            for binding in spec.ports:
                merged[(binding.ip, binding.port, binding.protocol)] = spec.internal_id
        return merged

    def stage(self, spec: ContainerSpec) -> bool:
        """Count a new ``spec``'s ports as bound and its id as taken until :meth:`unstage`
        (the API's write path, under the pool's lock); False when one is staged already."""
        with self._lock:
            if spec.internal_id in self._staged:
                return False
            self._staged[spec.internal_id] = spec
        return True

    def unstage(self, internal_id: str) -> None:
        """End :meth:`stage` (the write is done, or failed)."""
        with self._lock:
            self._staged.pop(internal_id, None)

    def staged(self, internal_id: str) -> bool:
        return internal_id in self._staged

    def volume_users(self, volume_id: str) -> list[str]:
        """The containers whose documents use the volume ``volume_id`` (a full id), sorted.

        An in-memory lookup: prefixes were resolved when the documents were read, the
        index is rebuilt only after a change. A prefix that named no volume then is
        tried again here (it may name one since).
        """
        generation, index = self._volume_index
        if generation != self._generation:
            generation = self._generation
            index = {}
            for key in sorted(self._specs):
                found = self._volume_ids.get(key)
                if found is not None:
                    index.setdefault(found, []).append(key)
            self._volume_index = (generation, index)
        users = list(index.get(volume_id, ()))
        for key, found in tuple(self._volume_ids.items()):
            spec = self._specs.get(key) if found is None else None
            if spec is None:
                continue
            late = full_volume_id(spec.volume_id, self.resolve_volume)
            if late is not None and self._specs.get(key) is spec:
                self._volume_ids[key] = late  # found since: remembered
                self._volume_index = (-1, {})
            if late == volume_id:
                users.append(key)
        return sorted(users)

    def _note_volume(self, key: str, spec: ContainerSpec) -> None:
        self._volume_ids[key] = full_volume_id(spec.volume_id, self.resolve_volume)

    def ids(self) -> list[str]:
        return sorted(self._specs)

    def all(self) -> list[ContainerSpec]:
        return [self._specs[key] for key in sorted(self._specs)]

    def problem(self, internal_id: str) -> DocumentProblem | None:
        """The problem of the container's document, or of a misnamed file that claims it."""
        found = self._problems.get(internal_id)
        if found is None and internal_id not in self._present:
            # A snapshot: scans run in a thread and change the dict.
            for file_key, claimed in tuple(self._claims.items()):
                if claimed == internal_id:
                    return self._problems.get(file_key)
        return found

    def problems(self) -> dict[str, DocumentProblem]:
        return dict(self._problems)

    def digest(self, internal_id: str) -> str | None:
        return self._digests.get(internal_id)

    def hold(self, internal_ids: set[str]) -> None:
        """Hold back the deletion of these containers (the deletion guard)."""
        with self._lock:
            self._held = set(internal_ids)

    def held(self) -> set[str]:
        return set(self._held)

    def deletion_held(self, internal_id: str) -> bool:
        """True when the reconciler must not delete ``internal_id`` although it has no spec.

        Either the deletion guard holds it, or a document for it exists but is invalid
        (no last good spec yet, e.g. right after a restart): nothing is deleted because
        of a broken file.
        """
        return deletion_held(
            internal_id, held=self._held, invalid=self._problems.keys(), claimed=self._claimed_ids
        )

    def _read_folder(self) -> list[str] | str:
        """The document names, or why the folder cannot be read."""
        folder = self._store.path_of(FOLDER)
        if not self._store.root.is_dir():
            return f"the desired folder {self._store.root} is missing"
        if not folder.is_dir():
            return f"{folder} is missing"
        try:
            return self._store.names(FOLDER)
        except StoreError as exc:
            return f"the desired folder cannot be read: {exc.message}"

    def scan(self, *, full: bool = True) -> ScanResult:
        """Re-read the folder; only documents whose content changed count as changed.

        Documents gone since the last scan come back as ``gone``, their specs kept (see
        :meth:`forget` to drop them once the deletion guard allows it). Unless ``full``,
        a file whose inode, size, modification and change times are those of its last
        read is not read again, so that a scan after a file event costs a listing and a
        ``stat`` per file, not a read and a hash of every document.
        """
        with self._lock:
            listing = self._read_folder()
            blocked: str | None = None
            if isinstance(listing, str):
                # Every known container would be gone: the guard will hold all of them.
                blocked, listing = listing, []
            seen: set[str] = set()
            changed: set[str] = set()
            for name in listing:
                stem = name.rsplit("/", 1)[1][: -len(".json")]
                key = stem if is_internal_id(stem) else f"invalid:{stem}"
                identity = _identity(self._store.path_of(name))
                if (
                    not full
                    and identity is not None
                    and key in self._digests
                    and self._stats.get(key) == identity
                ):
                    seen.add(key)
                    continue
                try:
                    raw = self._store.read_bytes(name)
                except StoreError as exc:
                    seen.add(key)
                    self._problems[key] = DocumentProblem(name, None, None, exc.message)
                    continue
                if raw is None:
                    continue
                seen.add(key)
                if identity is not None:
                    self._stats[key] = identity
                new_digest = digest(raw)
                if self._digests.get(key) == new_digest:
                    continue
                self._digests[key] = new_digest
                changed.add(key)
                self._claims.pop(key, None)
                if not is_internal_id(stem):
                    self._problems[key] = DocumentProblem(
                        name, None, None, "file name is not a valid internal_id"
                    )
                    continue
                parsed = parse_document(name, raw, expected_id=stem)
                if isinstance(parsed, DocumentProblem):
                    self._problems[key] = parsed
                    claimed = _claimed_id(raw)
                    if claimed is not None and claimed != stem:
                        self._claims[key] = claimed
                else:
                    self._problems.pop(key, None)
                    self._specs[key] = parsed
                    self._note_volume(key, parsed)
            self._present = seen
            if blocked is None:
                for gone in set(self._claims) - seen:
                    self._claims.pop(gone, None)
            claimed_ids = frozenset(self._claims.values())
            self._claimed_ids = claimed_ids
            # A document renamed so that its name and internal_id disagree still holds
            # its container: that is a problem to report, not a deletion.
            gone_keys = {k for k in set(self._digests) - seen if k not in claimed_ids}
            if blocked is None:
                for key in {k for k in gone_keys if k.startswith("invalid:")}:
                    self._forget_locked(key)  # a misnamed file holds no container
            result = ScanResult(
                changed=changed - {k for k in changed if k.startswith("invalid:")},
                gone={k for k in gone_keys if not k.startswith("invalid:")},
                folder_problem=blocked,
            )
        self._changed(result.changed)
        return result

    def _forget_locked(self, key: str) -> None:
        self._digests.pop(key, None)
        self._stats.pop(key, None)
        self._problems.pop(key, None)
        self._specs.pop(key, None)
        self._volume_ids.pop(key, None)
        self._held.discard(key)

    def forget(self, keys: set[str]) -> set[str]:
        """Apply withheld deletions: drop the specs of these keys whose file is still gone."""
        with self._lock:
            dropped = {key for key in keys if key not in self._present}
            for key in dropped:
                self._forget_locked(key)
        self._changed(dropped)
        return dropped

    def write(self, spec: ContainerSpec) -> bool:
        """Write a spec through the store (atomic); the cache follows at once.

        Writers of different documents run side by side (each write waits for its
        fsyncs); only the cache update takes the folder's lock, so that a POST does not
        wait for every other document's disk flush nor for a scan.
        """
        name = document_name(spec.internal_id)
        with self._store.lock(f"{name}#spec"):  # one writer per document, in order
            changed = self._store.write(name, spec.document())
            identity = _identity(self._store.path_of(name))
            raw = self._store.read_bytes(name) or b""
            with self._lock:
                self._digests[spec.internal_id] = digest(raw)
                if identity is not None:
                    self._stats[spec.internal_id] = identity
                self._specs[spec.internal_id] = spec
                self._note_volume(spec.internal_id, spec)
                self._problems.pop(spec.internal_id, None)
                self._held.discard(spec.internal_id)
                self._present.add(spec.internal_id)
        self._changed({spec.internal_id})
        return changed

    def remove(self, internal_id: str) -> bool:
        with self._lock:
            existed = self._store.delete(document_name(internal_id))
            self._digests.pop(internal_id, None)
            self._stats.pop(internal_id, None)
            self._problems.pop(internal_id, None)
            self._present.discard(internal_id)
            self._held.discard(internal_id)
            found = self._specs.pop(internal_id, None) is not None or existed
            self._volume_ids.pop(internal_id, None)
        self._changed({internal_id})
        return found
