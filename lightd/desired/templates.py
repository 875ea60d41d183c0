"""The desired template documents (``templates/<name>.json``) and their write path.

:class:`DesiredTemplates` keeps the last good template of every file: a file that does
not parse or validate is reported (file, field, reason) and the last good template keeps
serving its containers. ``scan`` says which templates changed, so the ingest can hint
every container that uses one. :class:`TemplateService` is the API's and the CLI's
write path: an egg or a lightd template body becomes a document; a template a container
document uses cannot be deleted (409). It must not talk to the engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from lightd.desired.documents import DocumentProblem
from lightd.errors import Conflict, NotFound, StoreError
from lightd.spec.template import TemplateSpec, is_template_name
from lightd.store import DocumentStore
from lightd.store.documents import digest
from lightd.templates.eggs import EggInvalid, template_from_body

FOLDER = "templates"


class TemplateNotFound(NotFound):
    message = "Template not found"


class TemplateInUse(Conflict):
    message = "Template is used by a container"


def template_document(name: str) -> str:
    return f"{FOLDER}/{name}.json"


def parse_template(
    name: str, raw: bytes, *, expected: str | None
) -> TemplateSpec | DocumentProblem:
    """One template document, or what is wrong with it (the field named)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return DocumentProblem(name, exc.lineno, exc.colno, f"not valid JSON: {exc.msg}")
    if not isinstance(data, dict):
        return DocumentProblem(name, 1, 1, "a template document must be a JSON object")
    try:
        template = template_from_body(data)
    except EggInvalid as exc:
        return DocumentProblem(name, None, None, f"{exc.field}: {exc.reason}")
    if expected is not None and template.name != expected:
        return DocumentProblem(
            name, None, None, f"name {template.name!r} does not match the file name {expected!r}"
        )
    return template


@dataclass(frozen=True)
class TemplateScan:
    changed: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)


class DesiredTemplates:
    """Last good templates, per-file problems and content digests of ``templates/``."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._templates: dict[str, TemplateSpec] = {}
        self._problems: dict[str, DocumentProblem] = {}
        self._digests: dict[str, str] = {}
        self._lock = threading.Lock()
        # Called (outside the lock) with each template name whose content changed.
        self.listeners: list[Callable[[str], None]] = []

    def get(self, name: str) -> TemplateSpec | None:
        return self._templates.get(name)

    def names(self) -> list[str]:
        return sorted(self._templates)

    def all(self) -> list[TemplateSpec]:
        return [self._templates[name] for name in sorted(self._templates)]

    def digest(self, name: str) -> str | None:
        return self._digests.get(name)

    def problems(self) -> dict[str, DocumentProblem]:
        return dict(self._problems)

    def problem(self, name: str) -> DocumentProblem | None:
        return self._problems.get(name)

    def _notify(self, names: set[str]) -> None:
        for name in sorted(names):
            for listener in self.listeners:
                listener(name)

    def scan(self) -> TemplateScan:
        """Re-read the folder. A missing folder means no templates were ever written.

        A template whose file disappeared is dropped: the containers that used it are
        then refused (their last good effective spec keeps running).
        """
        with self._lock:
            if not self._store.path_of(FOLDER).is_dir():
                listing: list[str] = []
            else:
                try:
                    listing = self._store.names(FOLDER)
                except StoreError:
                    return TemplateScan()  # unreadable: keep what is known
            seen: set[str] = set()
            changed: set[str] = set()
            for document in listing:
                stem = document.rsplit("/", 1)[1][: -len(".json")]
                try:
                    raw = self._store.read_bytes(document)
                except StoreError as exc:
                    seen.add(stem)
                    self._problems[stem] = DocumentProblem(document, None, None, exc.message)
                    continue
                if raw is None:
                    continue
                seen.add(stem)
                new_digest = digest(raw)
                if self._digests.get(stem) == new_digest:
                    continue
                self._digests[stem] = new_digest
                if not is_template_name(stem):
                    self._problems[stem] = DocumentProblem(
                        document, None, None, "file name is not a valid template name"
                    )
                    continue
                parsed = parse_template(document, raw, expected=stem)
                if isinstance(parsed, DocumentProblem):
                    self._problems[stem] = parsed
                    continue
                self._problems.pop(stem, None)
                if self._templates.get(stem) != parsed:
                    changed.add(stem)
                self._templates[stem] = parsed
            gone = set(self._digests) - seen
            for name in gone:
                self._digests.pop(name, None)
                self._problems.pop(name, None)
                if self._templates.pop(name, None) is not None:
                    changed.add(name)
        self._notify(changed)
        return TemplateScan(changed=changed, gone=gone)

    def write(self, template: TemplateSpec) -> bool:
        with self._lock:
            document = template_document(template.name)
            written = self._store.write(document, template.document())
            self._digests[template.name] = digest(self._store.read_bytes(document) or b"")
            before = self._templates.get(template.name)
            self._templates[template.name] = template
            self._problems.pop(template.name, None)
        if before != template:
            self._notify({template.name})
        return written

    def remove(self, name: str) -> bool:
        with self._lock:
            existed = self._store.delete(template_document(name))
            self._digests.pop(name, None)
            self._problems.pop(name, None)
            found = self._templates.pop(name, None) is not None or existed
        self._notify({name})
        return found


class TemplateService:
    """Import (egg or template), list, read and delete templates."""

    def __init__(self, *, templates: DesiredTemplates, users: Callable[[str], list[str]]) -> None:
        self._templates = templates
        self._users = users  # template name -> internal_ids of the documents using it

    def get(self, name: str) -> TemplateSpec:
        template = self._templates.get(name) if is_template_name(name) else None
        if template is None:
            raise TemplateNotFound()
        return template

    def all(self) -> list[TemplateSpec]:
        return self._templates.all()

    def users(self, name: str) -> list[str]:
        return self._users(name)

    async def put(self, body: dict[str, Any], *, name: str | None = None) -> TemplateSpec:
        """Write the template an egg or a lightd template describes; 400 names the field."""
        if name is not None and not is_template_name(name):
            raise EggInvalid("name", "must be lowercase letters, digits, '.', '_' or '-'")
        template = template_from_body(body, name=name)
        await asyncio.to_thread(self._templates.write, template)
        return template

    async def delete(self, name: str) -> None:
        self.get(name)
        users = self._users(name)
        if users:
            raise TemplateInUse(f"Template {name} is used by {', '.join(users)}")
        await asyncio.to_thread(self._templates.remove, name)
