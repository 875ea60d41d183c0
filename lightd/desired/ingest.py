"""The ingest path of hand-edited desired state: re-read the folder, guard, then hint.

The watcher (and the periodic rescan, and ``POST /desired/apply``) call
:meth:`DesiredIngest.ingest`; it re-reads ``ports.json``, ``templates/`` and
``containers/``, and hints the reconciler for every container whose document changed or
disappeared, and every container whose template changed, exactly as the API does after
its own writes. Deletions go through the **deletion guard**
(:func:`lightd.desired.guard.decide_deletions`): when the folder is missing or
unreadable, or when the deletions found at once exceed ``max_delete_share`` of the known
containers (and are more than one), nothing is deleted; it reports ``deletion blocked``
with the reason and waits for the files to come back or for an apply that allows a mass
deletion.

It must not talk to the engine or decide convergence; it only feeds the workqueue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lightd.desired.admission import PoolLike
from lightd.desired.documents import DesiredContainers, DocumentProblem
from lightd.desired.guard import decide_deletions
from lightd.desired.templates import DesiredTemplates
from lightd.spec.ports import PORTS_DOCUMENT

log = logging.getLogger("lightd.gitops")


@dataclass(frozen=True)
class IngestResult:
    changed: list[str]
    deleted: list[str]
    held: list[str]
    deletion_blocked: str | None


@dataclass
class DesiredStatus:
    folder: str
    watching: bool = False
    deletion_blocked: str | None = None
    held: list[str] = field(default_factory=list)
    last_scan_at: float | None = None
    scans: int = 0


def pool_problems(pool: PoolLike) -> list[DocumentProblem]:
    """The port pool's document problems in the containers' problem shape."""
    found: list[DocumentProblem] = []
    if pool.document_error is not None:
        found.append(DocumentProblem(PORTS_DOCUMENT, None, None, pool.document_error))
    for problem in pool.problems:
        index = getattr(problem, "index", None)
        reason = getattr(problem, "reason", str(problem))
        found.append(DocumentProblem(PORTS_DOCUMENT, None, None, f"ports[{index}]: {reason}"))
    return found


class DesiredIngest:
    """Re-reads the desired folder on hints; one ingest at a time."""

    def __init__(
        self,
        *,
        root: Path,
        desired: DesiredContainers,
        pool: PoolLike,
        observed_ids: Callable[[], Iterable[str]],
        hint: Callable[[str], None],
        max_delete_share: float,
        templates: DesiredTemplates | None = None,
        template_users: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.root = root
        self._desired = desired
        self._templates = templates
        self._template_users = template_users or (lambda _name: [])
        self._pool = pool
        self._observed_ids = observed_ids
        self._hint = hint
        self.max_delete_share = max_delete_share
        self._lock = asyncio.Lock()
        # Containers lightd had (observed state) with no document at the first scan:
        # deleting them is subject to the same guard as deletions seen while running.
        self._orphans: set[str] = set()
        self._first = True
        self.status = DesiredStatus(folder=str(root))

    def problems(self) -> list[DocumentProblem]:
        """Every desired-document problem: container files, templates, then ``ports.json``."""
        found = [self._desired.problems()[key] for key in sorted(self._desired.problems())]
        if self._templates is not None:
            problems = self._templates.problems()
            found += [problems[key] for key in sorted(problems)]
        return found + pool_problems(self._pool)

    async def ingest(
        self, reason: str, *, allow_mass_delete: bool = False, full: bool = True
    ) -> IngestResult:
        """Look at the folder again; unless ``full``, files whose identity (inode, size,
        times) is unchanged are not read again."""
        async with self._lock:
            return await self._ingest(reason, allow_mass_delete=allow_mass_delete, full=full)

    async def _ingest(self, reason: str, *, allow_mass_delete: bool, full: bool) -> IngestResult:
        if await asyncio.to_thread(self.root.is_dir):
            # The pool first: a checkout may add a port and the container that binds it.
            await self._pool.reload()
        # Templates before containers: a checkout may add a template and its users.
        changed_templates: set[str] = set()
        if self._templates is not None:
            changed_templates = (await asyncio.to_thread(self._templates.scan)).changed
        scan = await asyncio.to_thread(lambda: self._desired.scan(full=full))
        if self._first:
            self._first = False
            self._orphans = {
                key
                for key in self._observed_ids()
                if self._desired.get(key) is None and not self._desired.deletion_held(key)
            }
        if self._orphans:  # an orphan whose record was forgotten meanwhile is none
            observed = set(self._observed_ids())
            self._orphans = {
                key for key in self._orphans if self._desired.get(key) is None and key in observed
            }
        deletions = decide_deletions(
            scan.gone,
            known=set(self._desired.ids()),
            orphans=self._orphans,
            folder_problem=scan.folder_problem,
            max_share=self.max_delete_share,
            allow_mass_delete=allow_mass_delete,
        )
        deleted: set[str] = set()
        if deletions.apply:
            deleted = await asyncio.to_thread(
                self._desired.forget, set(deletions.apply & scan.gone)
            )
            deleted |= deletions.apply & self._orphans
            self._orphans = set()
        await asyncio.to_thread(self._desired.hold, set(deletions.hold))
        blocked = deletions.blocked_reason
        pending = set(deletions.hold)
        self._report(blocked, pending)
        users = {key for name in changed_templates for key in self._template_users(name)}
        for key in sorted(scan.changed | deleted | users):
            self._hint(key)
        if scan.changed or deleted:
            log.info(
                "desired folder (%s): %d changed, %d deleted",
                reason,
                len(scan.changed),
                len(deleted),
            )
        self.status.last_scan_at = time.time()
        self.status.scans += 1
        return IngestResult(
            changed=sorted(scan.changed),
            deleted=sorted(deleted),
            held=sorted(pending),
            deletion_blocked=blocked,
        )

    def _report(self, blocked: str | None, held: set[str]) -> None:
        previous = self.status.deletion_blocked
        self.status.deletion_blocked = blocked
        self.status.held = sorted(held)
        if blocked is not None and blocked != previous:
            log.warning(
                "deletion blocked: %s; keeping %s. Restore the files or run "
                "`lightd apply --allow-mass-delete`",
                blocked,
                ", ".join(sorted(held)),
            )
        elif blocked is None and previous is not None:
            log.info("deletion no longer blocked")
