"""The outbox: notifications waiting for the panel, in order, bounded, as one document.

Holds a FIFO per container (entries carry a global sequence number, so the order of
everything is kept and restored), the :class:`~lightd.remote.events.Reported` record per
container, and the next sequence number. :meth:`Outbox.snapshot` is the persisted
document (``<data_dir>/remote/outbox.json``); :meth:`Outbox.restore` reads it back.

The bound: when more than ``max_entries`` wait, the oldest *state* notification that a
later state notification of the same container supersedes is dropped, again until the
outbox fits; so a container's queue collapses towards its latest state and its final
state is never lost. *Activity* notifications (SFTP logins, uploads, ...) go first, oldest
first; only when no activity or state notification can go are the oldest *error*
notifications dropped; when neither can go (one final state per container), the outbox
stays over its bound rather than lose a final state.

Pure data: no I/O, no asyncio, no HTTP. Entries being sent are pinned (never dropped).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field

from lightd.remote.events import Kind, Notification, Reported

log = logging.getLogger("lightd.remote")


class Entry(BaseModel):
    seq: int
    server: str
    kind: Kind
    body: dict[str, str | int | float]
    at: float = 0.0


class ReportedModel(BaseModel):
    install: str | None = None
    state: str | None = None
    error: str | None = None
    crash_count: int = 0
    gave_up: bool = False


class OutboxDocument(BaseModel):
    next_seq: int = 1
    entries: list[Entry] = Field(default_factory=list)
    reported: dict[str, ReportedModel] = Field(default_factory=dict)


class Outbox:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.next_seq = 1
        self.reported: dict[str, Reported] = {}
        self._queues: dict[str, deque[Entry]] = {}
        self._count = 0
        self._pinned: set[int] = set()
        self.collapsed = 0  # dropped by the bound since start

    def __len__(self) -> int:
        return self._count

    def servers(self) -> list[str]:
        """Containers with something waiting, oldest first."""
        heads = [(q[0].seq, server) for server, q in self._queues.items() if q]
        return [server for _seq, server in sorted(heads)]

    def entries(self, server: str | None = None) -> list[Entry]:
        if server is not None:
            return list(self._queues.get(server, ()))
        return sorted((e for q in self._queues.values() for e in q), key=lambda e: e.seq)

    def add(self, server: str, notification: Notification) -> Entry:
        entry = Entry(
            seq=self.next_seq,
            server=server,
            kind=notification.kind,
            body=notification.body,
            at=time.time(),
        )
        self.next_seq += 1
        self._queues.setdefault(server, deque()).append(entry)
        self._count += 1
        self._fit()
        return entry

    def head(self, server: str) -> Entry | None:
        queue = self._queues.get(server)
        return queue[0] if queue else None

    def pin(self, entry: Entry) -> None:
        self._pinned.add(entry.seq)

    def unpin(self, entry: Entry) -> None:
        self._pinned.discard(entry.seq)

    def remove(self, entry: Entry) -> bool:
        """Take ``entry`` out (delivered or refused); False when it was no longer there."""
        queue = self._queues.get(entry.server)
        if not queue:
            return False
        for index, item in enumerate(queue):
            if item.seq == entry.seq:
                del queue[index]
                self._count -= 1
                if not queue:
                    del self._queues[entry.server]
                return True
        return False

    def _fit(self) -> None:
        while self._count > self.max_entries:
            victim = self._oldest("activity") or self._superseded_state() or self._oldest("error")
            if victim is None:
                log.warning(
                    "panel outbox over its bound (%d > %d): only final states are left",
                    self._count,
                    self.max_entries,
                )
                return
            self.remove(victim)
            self.collapsed += 1

    def _superseded_state(self) -> Entry | None:
        best: Entry | None = None
        for queue in self._queues.values():
            states = [e for e in queue if e.kind == "state"]
            for entry in states[:-1]:  # the last state of a container always stays
                if entry.seq not in self._pinned:
                    if best is None or entry.seq < best.seq:
                        best = entry
                    break
        return best

    def _oldest(self, kind: Kind) -> Entry | None:
        best: Entry | None = None
        for queue in self._queues.values():
            for entry in queue:
                if entry.kind == kind and entry.seq not in self._pinned:
                    if best is None or entry.seq < best.seq:
                        best = entry
                    break
        return best

    def snapshot(self) -> dict[str, Any]:
        return {
            "next_seq": self.next_seq,
            "entries": [e.model_dump(mode="json") for e in self.entries()],
            "reported": {server: asdict(r) for server, r in sorted(self.reported.items())},
        }

    def restore(self, raw: Any) -> None:
        """Load a snapshot (raises pydantic's ValidationError when it is not one)."""
        document = OutboxDocument.model_validate(raw)
        self._queues.clear()
        self._count = 0
        for entry in sorted(document.entries, key=lambda e: e.seq):
            self._queues.setdefault(entry.server, deque()).append(entry)
            self._count += 1
        last = max((e.seq for e in document.entries), default=0)
        self.next_seq = max(document.next_seq, last + 1)
        self.reported = {
            server: Reported(**r.model_dump()) for server, r in document.reported.items()
        }
        self._fit()
