"""Observed state of every container, kept in memory and persisted under ``state/``.

Changes arrive only as typed :class:`~lightd.spec.observed.ObservedPatch` values
(:meth:`ObservedStore.patch`), each checked against the transition table of
``lightd.spec.observed`` and validated field by field; the reconciler's controller is
the one caller that writes. Listeners (the event hub, the panel notifier) hear every
change. It must not decide anything and must not touch the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from pydantic import ValidationError

from lightd.spec.observed import ObservedContainer, ObservedPatch, apply_patch
from lightd.store.documents import DocumentStore

log = logging.getLogger("lightd.state")

STATE_FOLDER = "state/containers"
Listener = Callable[[ObservedContainer | None, ObservedContainer | None], None]


def _name(internal_id: str) -> str:
    return f"{STATE_FOLDER}/{internal_id}.json"


class ObservedStore:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._items: dict[str, ObservedContainer] = {}
        self._listeners: list[Listener] = []
        self.loaded = False
        # Per key: one file write at a time; a patch whose change an earlier patch's
        # write already carried writes nothing (versions count the patches).
        self._write_locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}  # holders and waiters of each key's lock
        # Versions stay while anyone holds or awaits the key's lock, across a forget: a
        # patch queued behind the forget's delete must not be outnumbered by a later one.
        self._version: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self.writes = 0  # files written (read by tests and benches)

    def load(self) -> None:
        self.loaded = True
        for name in self._store.names(STATE_FOLDER):
            try:
                item = ObservedContainer.model_validate(self._store.read(name))
            except (ValidationError, Exception) as exc:  # a broken file is rebuilt from the engine
                log.warning("ignoring unreadable observed state %s: %s", name, exc)
                continue
            self._items[item.internal_id] = item

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def get(self, internal_id: str) -> ObservedContainer | None:
        return self._items.get(internal_id)

    def all(self) -> list[ObservedContainer]:
        return list(self._items.values())

    async def patch(self, internal_id: str, patch: ObservedPatch) -> ObservedContainer:
        """Apply ``patch`` (a new record when there is none); raises ``IllegalTransition``."""
        old = self._items.get(internal_id)
        now = time.time()
        base = old or ObservedContainer(internal_id=internal_id, created_at=now)
        new = apply_patch(base, patch).model_copy(update={"updated_at": now})
        if old is not None and new.model_dump(exclude={"updated_at"}) == old.model_dump(
            exclude={"updated_at"}
        ):
            return old
        self._items[internal_id] = new
        version = self._version.get(internal_id, 0) + 1
        self._version[internal_id] = version
        await self._persist(internal_id, version)
        self._notify(old, new)
        return new

    @contextlib.asynccontextmanager
    async def _write_lock(self, internal_id: str) -> AsyncIterator[None]:
        """Hold the key's write lock; it is dropped once nobody holds or awaits it (a
        lock dropped with a waiter left would let a later writer past that waiter)."""
        found = self._write_locks.get(internal_id)
        if found is None:
            found = self._write_locks[internal_id] = asyncio.Lock()
        self._lock_users[internal_id] = self._lock_users.get(internal_id, 0) + 1
        try:
            async with found:
                yield
        finally:
            left = self._lock_users[internal_id] - 1
            if left:
                self._lock_users[internal_id] = left
            else:
                del self._lock_users[internal_id]
                del self._write_locks[internal_id]
                if internal_id not in self._items:  # forgotten: versions start again
                    self._version.pop(internal_id, None)
                    self._written.pop(internal_id, None)

    async def _persist(self, internal_id: str, version: int) -> None:
        """Write the key's record as it is now, unless a write since ``version`` did.

        Observations are rebuilt from the engine after a restart: atomic, not fsynced
        (they change at every start, stop and crash, on the reconciler's path), and
        written without reading the old file first (lightd is their one writer and
        :meth:`patch` writes only a changed record).
        """
        async with self._write_lock(internal_id):
            if self._written.get(internal_id, 0) >= version:
                return  # a later patch's write carried this one's change
            item = self._items.get(internal_id)
            if item is None:
                return  # forgotten meanwhile: its file is deleted, not written again
            latest = self._version.get(internal_id, version)
            data = item.model_dump(mode="json")
            await asyncio.to_thread(
                self._store.write, _name(internal_id), data, durable=False, compare=False
            )
            self.writes += 1
            self._written[internal_id] = latest

    async def forget(self, internal_id: str) -> None:
        old = self._items.pop(internal_id, None)
        async with self._write_lock(internal_id):
            await asyncio.to_thread(self._store.delete, _name(internal_id))
        if old is not None:
            self._notify(old, None)

    def _notify(self, old: ObservedContainer | None, new: ObservedContainer | None) -> None:
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("state listener failed")
