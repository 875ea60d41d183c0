"""Reads a desired folder the way the daemon does, without a daemon: ``lightd validate``.

Every container and template document is parsed with the daemon's own parser (so a
file that validates here is accepted there), ``ports.json`` entry by entry, and a few
checks across documents are added (a port bound twice, a bound port missing from the
pool, a template missing or a variable breaking its rules). Problems
carry the file, line and column where they can be found. It must not write anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from lightd.desired.documents import FOLDER, DocumentProblem, parse_document
from lightd.desired.effective import resolution_error
from lightd.desired.templates import FOLDER as TEMPLATES_FOLDER
from lightd.desired.templates import parse_template
from lightd.spec.container import ContainerSpec
from lightd.spec.ids import is_internal_id
from lightd.spec.ports import (
    PORTS_DOCUMENT,
    ParsedPool,
    PoolDocumentError,
    format_key,
    normalise_ip,
    parse_pool,
)
from lightd.spec.template import TemplateSpec, is_template_name
from lightd.store.documents import TEMP_SUFFIX
from lightd.templates.resolve import effective_spec

KNOWN_POOL_KEYS = frozenset({"ports", "$schema"})


@dataclass
class FolderReading:
    root: Path
    specs: dict[str, ContainerSpec] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)  # internal_ids whose file is invalid
    pool: ParsedPool | None = None
    problems: list[DocumentProblem] = field(default_factory=list)
    templates: dict[str, TemplateSpec] = field(default_factory=dict)


def position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def entry_offsets(text: str) -> list[int]:
    """Offsets of the items of the top-level ``ports`` list (empty when not found)."""
    decoder = json.JSONDecoder()
    key = text.find('"ports"')
    if key < 0:
        return []
    start = text.find("[", key)
    if start < 0:
        return []
    offsets: list[int] = []
    index = start + 1
    while index < len(text):
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text) or text[index] == "]":
            break
        offsets.append(index)
        try:
            _value, index = decoder.raw_decode(text, index)
        except ValueError:
            break
    return offsets


def _display(root: Path, name: str) -> str:
    return os.path.join(str(root), name)


def _documents(reading: FolderReading, folder_name: str) -> Iterator[tuple[str, str, bytes]]:
    """(shown name, stem, bytes) of each ``*.json`` of a folder; problems go to ``reading``."""
    folder = reading.root / folder_name
    try:
        entries = sorted(os.listdir(folder))
    except FileNotFoundError:
        return
    except OSError as exc:
        reading.problems.append(
            DocumentProblem(str(folder), None, None, f"cannot read: {exc.strerror}")
        )
        return
    for entry in entries:
        if not entry.endswith(".json") or entry.startswith(".") or entry.endswith(TEMP_SUFFIX):
            continue
        shown = _display(reading.root, f"{folder_name}/{entry}")
        try:
            raw = (folder / entry).read_bytes()
        except OSError as exc:
            reading.problems.append(DocumentProblem(shown, None, None, f"cannot read: {exc}"))
            continue
        yield shown, entry[: -len(".json")], raw


def _read_containers(reading: FolderReading) -> None:
    for shown, stem, raw in _documents(reading, FOLDER):
        if not is_internal_id(stem):
            reading.problems.append(
                DocumentProblem(shown, None, None, "file name is not a valid internal_id")
            )
            continue
        parsed = parse_document(shown, raw, expected_id=stem)
        if isinstance(parsed, DocumentProblem):
            reading.problems.append(parsed)
            reading.invalid.add(stem)
        else:
            reading.specs[stem] = parsed


def _read_templates(reading: FolderReading) -> None:
    for shown, stem, raw in _documents(reading, TEMPLATES_FOLDER):
        if not is_template_name(stem):
            reading.problems.append(
                DocumentProblem(shown, None, None, "file name is not a valid template name")
            )
            continue
        parsed = parse_template(shown, raw, expected=stem)
        if isinstance(parsed, DocumentProblem):
            reading.problems.append(parsed)
        else:
            reading.templates[stem] = parsed


def _check_templates(reading: FolderReading) -> None:
    """Each document's template exists and its variables pass their rules (admission)."""
    for internal_id, spec in sorted(reading.specs.items()):
        if spec.template is None:
            continue
        template = reading.templates.get(spec.template)
        resolved = effective_spec(spec, template, image_map={}, tz="UTC")
        if not isinstance(resolved, ContainerSpec):
            shown = _display(reading.root, f"{FOLDER}/{internal_id}.json")
            reading.problems.append(
                DocumentProblem(shown, None, None, resolution_error(resolved).message)
            )


def _read_pool(reading: FolderReading) -> None:
    path = reading.root / PORTS_DOCUMENT
    shown = _display(reading.root, PORTS_DOCUMENT)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        reading.problems.append(DocumentProblem(shown, None, None, f"cannot read: {exc}"))
        return
    if not raw.strip():
        reading.pool = ParsedPool(slots=(), extra={})
        return
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reading.problems.append(
            DocumentProblem(shown, exc.lineno, exc.colno, f"not valid JSON: {exc.msg}")
        )
        return
    try:
        reading.pool = parse_pool(document)
    except PoolDocumentError as exc:
        reading.problems.append(DocumentProblem(shown, 1, 1, exc.reason))
        return
    text = raw.decode("utf-8", errors="replace")
    for key in sorted(set(document) - KNOWN_POOL_KEYS):
        line, column = position(text, max(text.find(json.dumps(key)), 0))
        reading.problems.append(DocumentProblem(shown, line, column, f"{key}: unknown field"))
    offsets = entry_offsets(text)
    for problem in reading.pool.problems:
        where = (
            position(text, offsets[problem.index]) if problem.index < len(offsets) else (None, None)
        )
        reading.problems.append(
            DocumentProblem(shown, where[0], where[1], f"ports[{problem.index}]: {problem.reason}")
        )


def _ports_line(reading: FolderReading, internal_id: str) -> tuple[str, int | None, int | None]:
    name = f"{FOLDER}/{internal_id}.json"
    shown = _display(reading.root, name)
    try:
        text = (reading.root / name).read_text("utf-8", errors="replace")
    except OSError:
        return shown, None, None
    index = text.find('"ports"')
    if index < 0:
        return shown, None, None
    line, column = position(text, index)
    return shown, line, column


def _check_bindings(reading: FolderReading) -> None:
    owners: dict[tuple[str, int, str], str] = {}
    pooled = (
        {(entry.ip, entry.port): entry.protocol for entry in reading.pool.entries}
        if reading.pool is not None
        else None
    )
    for internal_id, spec in sorted(reading.specs.items()):
        for binding in spec.ports:
            ip = normalise_ip(binding.ip)
            key = (ip, binding.port, binding.protocol)
            shown, line, column = _ports_line(reading, internal_id)
            text = f"{format_key((ip, binding.port))}/{binding.protocol}"
            other = owners.get(key)
            if other is not None:
                reading.problems.append(
                    DocumentProblem(shown, line, column, f"ports: {text} is also bound by {other}")
                )
                continue
            owners[key] = internal_id
            if pooled is not None and pooled.get((ip, binding.port)) != binding.protocol:
                reading.problems.append(
                    DocumentProblem(shown, line, column, f"ports: {text} is not in the port pool")
                )


def read_folder(root: Path) -> FolderReading:
    """Every document of ``root`` parsed, and every problem found."""
    reading = FolderReading(root=root)
    if not root.is_dir():
        reading.problems.append(
            DocumentProblem(str(root), None, None, "the desired folder does not exist")
        )
        return reading
    _read_pool(reading)
    _read_templates(reading)
    _read_containers(reading)
    _check_bindings(reading)
    _check_templates(reading)
    return reading
