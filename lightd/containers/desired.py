"""The desired container documents (``containers/<internal_id>.json``) as lightd sees them.

Keeps the last good spec of every container: a file that does not parse or validate is
reported (file, position or field, reason) and its container keeps its last good spec.
A document whose name does not match its ``internal_id`` is invalid. Writes go through
the document store. It must not talk to the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from lightd.spec.container import ContainerSpec
from lightd.spec.ids import is_internal_id
from lightd.store import DocumentStore
from lightd.store.documents import digest

FOLDER = "containers"


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
    changed: set[str]
    removed: set[str]


class DesiredContainers:
    """Last good specs, per-file problems and content digests of the container folder."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._specs: dict[str, ContainerSpec] = {}
        self._problems: dict[str, DocumentProblem] = {}
        self._digests: dict[str, str] = {}
        self._lock = threading.Lock()
        # Called (from any thread) with the internal_id of every spec that changed.
        self.listeners: list[Callable[[str], None]] = []

    def _changed(self, keys: set[str]) -> None:
        for key in sorted(keys):
            for listener in self.listeners:
                listener(key)

    def get(self, internal_id: str) -> ContainerSpec | None:
        return self._specs.get(internal_id)

    def ids(self) -> list[str]:
        return sorted(self._specs)

    def all(self) -> list[ContainerSpec]:
        return [self._specs[key] for key in sorted(self._specs)]

    def problem(self, internal_id: str) -> DocumentProblem | None:
        return self._problems.get(internal_id)

    def problems(self) -> dict[str, DocumentProblem]:
        return dict(self._problems)

    def digest(self, internal_id: str) -> str | None:
        return self._digests.get(internal_id)

    def scan(self, *, allow_removals: bool = True) -> ScanResult:
        """Re-read the folder; only documents whose content changed count as changed."""
        with self._lock:
            seen: set[str] = set()
            changed: set[str] = set()
            for name in self._store.names(FOLDER):
                stem = name.rsplit("/", 1)[1][: -len(".json")]
                raw = self._store.read_bytes(name)
                if raw is None:
                    continue
                key = stem if is_internal_id(stem) else f"invalid:{stem}"
                seen.add(key)
                new_digest = digest(raw)
                if self._digests.get(key) == new_digest:
                    continue
                self._digests[key] = new_digest
                changed.add(key)
                if not is_internal_id(stem):
                    self._problems[key] = DocumentProblem(
                        name, None, None, "file name is not a valid internal_id"
                    )
                    continue
                parsed = parse_document(name, raw, expected_id=stem)
                if isinstance(parsed, DocumentProblem):
                    self._problems[key] = parsed
                else:
                    self._problems.pop(key, None)
                    self._specs[key] = parsed
            removed = set(self._digests) - seen
            if allow_removals:
                for key in removed:
                    self._digests.pop(key, None)
                    self._problems.pop(key, None)
                    self._specs.pop(key, None)
            result = ScanResult(
                changed={k for k in changed if not k.startswith("invalid:")},
                removed={k for k in removed if not k.startswith("invalid:")},
            )
        self._changed(result.changed | (result.removed if allow_removals else set()))
        return result

    def write(self, spec: ContainerSpec) -> bool:
        """Write a spec through the store (atomic); the cache follows at once."""
        with self._lock:
            name = document_name(spec.internal_id)
            changed = self._store.write(name, spec.document())
            raw = self._store.read_bytes(name) or b""
            self._digests[spec.internal_id] = digest(raw)
            self._specs[spec.internal_id] = spec
            self._problems.pop(spec.internal_id, None)
        self._changed({spec.internal_id})
        return changed

    def remove(self, internal_id: str) -> bool:
        with self._lock:
            existed = self._store.delete(document_name(internal_id))
            self._digests.pop(internal_id, None)
            self._problems.pop(internal_id, None)
            found = self._specs.pop(internal_id, None) is not None or existed
        self._changed({internal_id})
        return found
