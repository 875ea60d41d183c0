"""The port pool service: the desired-state document ``ports.json`` behind one lock.

Every change runs under :attr:`PortPool.lock` (one ``asyncio.Lock``): it re-reads the
document (an operator may have edited it), decides, and writes the whole document
through the :class:`~lightd.store.DocumentStore`. Container creation takes the same lock
so that checking a binding and writing the container document are one step.

``in_use`` is derived, never stored: a port is in use when it is ``reserved`` in the
document or when a container document binds it. Bindings come from the injected
``bindings`` callable ((ip, port, protocol) -> internal_id); until containers exist it
answers nothing.

Invalid entries of a hand-edited file are kept verbatim and reported
(:attr:`PortPool.problems`); a document that cannot be parsed at all keeps the last good
pool in memory and refuses every change (409) so that lightd never overwrites what the
operator is editing. This module must not touch Docker or serve HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from lightd.errors import (
    InvalidRequest,
    NoAvailablePorts,
    PoolDocumentInvalid,
    PortBound,
    PortExists,
    PortInUse,
    PortNotFound,
    PortNotInPool,
)
from lightd.pool.probe import first_bindable
from lightd.spec.ports import (
    PORTS_DOCUMENT,
    BindingKey,
    EntryProblem,
    ParsedPool,
    PoolDocumentError,
    PortEntry,
    PortKey,
    Protocol,
    Slot,
    format_key,
    normalise_ip,
    parse_pool_bytes,
    pool_document,
)
from lightd.store import DocumentStore
from lightd.store.documents import digest

log = logging.getLogger("lightd.pool")

Bindings = Callable[[], Mapping[BindingKey, str]]
Prober = Callable[[Iterable[BindingKey]], BindingKey | None]


def no_bindings() -> Mapping[BindingKey, str]:
    return {}


@dataclass(frozen=True)
class PortView:
    """A pool entry as answered: the stored fields plus who binds it."""

    ip: str
    port: int
    protocol: Protocol
    reserved: bool
    container: str | None

    @property
    def in_use(self) -> bool:
        return self.reserved or self.container is not None


@dataclass(frozen=True)
class Skipped:
    ip: str
    port: int
    reason: str


@dataclass(frozen=True)
class PoolListing:
    ports: tuple[PortView, ...]
    problems: tuple[EntryProblem, ...]
    document_error: str | None


class PortPool:
    """The pool: load at start, :meth:`reload` on a hint, change only under :attr:`lock`.

    ``bindings`` is called under the lock on every answer, so it must be synchronous and
    cheap (an in-memory index of container documents, not a disk or engine read). The
    Daemon may replace it after construction (``daemon.ports.bindings = ...``).
    """

    def __init__(
        self,
        store: DocumentStore,
        *,
        bindings: Bindings = no_bindings,
        prober: Prober = first_bindable,
        name: str = PORTS_DOCUMENT,
    ) -> None:
        self.store = store
        self.name = name
        self.bindings = bindings
        self.lock = asyncio.Lock()
        self._prober = prober
        self._pool = ParsedPool(slots=(), extra={})
        self._digest: str | None = None
        self._document_error: str | None = None
        # Called on the event loop whenever the pool document changed.
        self.listeners: list[Callable[[], None]] = []

    # ---- reading the document -------------------------------------------------------

    @property
    def problems(self) -> tuple[EntryProblem, ...]:
        """Invalid entries of the current document, by index."""
        return self._pool.problems

    @property
    def document_error(self) -> str | None:
        """Why the document as a whole cannot be read, or None."""
        return self._document_error

    async def load(self) -> None:
        """Read the document at start (same as :meth:`reload`)."""
        await self.reload()

    async def reload(self) -> None:
        """Re-read the document (the file watcher's entry point)."""
        async with self.lock:
            await self.refresh()

    async def refresh(self) -> None:
        """Re-read the document; the caller holds :attr:`lock`. Cheap when unchanged."""
        data = await asyncio.to_thread(self.store.read_bytes, self.name)
        current = None if data is None else digest(data)
        if current == self._digest:
            return
        self._digest = current
        try:
            parsed = parse_pool_bytes(data)
        except PoolDocumentError as exc:
            self._document_error = exc.reason
            log.error(
                "%s is invalid, keeping the last good pool (%d entries): %s",
                self.name,
                len(self._pool.entries),
                exc.reason,
            )
            return
        self._document_error = None
        self._pool = parsed
        for listener in self.listeners:
            listener()
        for problem in parsed.problems:
            log.warning(
                "%s entry %d is invalid and ignored: %s", self.name, problem.index, problem.reason
            )

    async def _write(self, slots: list[Slot]) -> None:
        document = pool_document(slots, self._pool.extra)
        await asyncio.to_thread(self.store.write, self.name, document)
        # Re-read what was written so that indexes of invalid entries stay true.
        await self.refresh()

    def _require_writable(self) -> None:
        if self._document_error is not None:
            raise PoolDocumentInvalid(self._document_error)

    # ---- lookups (the caller holds the lock and has refreshed) ----------------------

    def entries(self) -> tuple[PortEntry, ...]:
        """The valid entries as last read (no lock needed for a consistent snapshot)."""
        return self._pool.entries

    def lookup(self, ip: str, port: int) -> PortEntry | None:
        """The valid entry for a normalised ``ip`` and ``port``, or None."""
        return self._pool.by_key.get((ip, port))

    def view(self, entry: PortEntry, bound: Mapping[BindingKey, str] | None = None) -> PortView:
        bound = self.bindings() if bound is None else bound
        return PortView(
            ip=entry.ip,
            port=entry.port,
            protocol=entry.protocol,
            reserved=entry.reserved,
            container=bound.get(entry.binding),
        )

    def check_bindings(self, ports: Iterable[BindingKey], *, container: str) -> list[PortEntry]:
        """The entries ``container`` may publish; raise when one is not pooled or taken.

        Every (ip, port, protocol) must be a pool entry with that protocol
        (:class:`PortNotInPool`, 400) and not bound by another container
        (:class:`PortBound`, 409), and no port may be listed twice. A reservation does
        not block: a panel reserves a port and then creates the container that uses it.
        Call with :attr:`lock` held after :meth:`refresh`, and write the container
        document before releasing it.
        """
        bound = self.bindings()
        found: list[PortEntry] = []
        for ip, port, protocol in ports:
            try:
                address = normalise_ip(ip)
            except ValueError:
                raise PortNotInPool() from None
            entry = self.lookup(address, port)
            if entry is None or entry.protocol != protocol:
                raise PortNotInPool()
            if entry in found:
                raise InvalidRequest(
                    f"Invalid port binding: {format_key(entry.key)} is listed twice"
                )
            owner = bound.get(entry.binding)
            if owner is not None and owner != container:
                raise PortBound(owner)
            found.append(entry)
        return found

    def _require(self, ip: str, port: int) -> PortEntry:
        entry = self.lookup(ip, port)
        if entry is None:
            raise PortNotFound()
        return entry

    # ---- the API's operations -------------------------------------------------------

    async def listing(self) -> PoolListing:
        async with self.lock:
            await self.refresh()
            bound = self.bindings()
            return PoolListing(
                ports=tuple(self.view(entry, bound) for entry in self._pool.entries),
                problems=self._pool.problems,
                document_error=self._document_error,
            )

    async def get(self, ip: str, port: int) -> PortView:
        async with self.lock:
            await self.refresh()
            return self.view(self._require(ip, port))

    async def add(self, entries: list[PortEntry]) -> list[PortEntry]:
        """Add every entry or none (:class:`PortExists` names the first duplicate)."""
        async with self.lock:
            await self.refresh()
            self._require_writable()
            taken = {slot.key for slot in self._pool.entries}
            single = len(entries) == 1
            for entry in entries:
                if entry.key in taken:
                    raise PortExists() if single else PortExists(_exists(entry.key))
                taken.add(entry.key)
            fresh = [entry.model_copy(update={"reserved": False}) for entry in entries]
            await self._write([*self._pool.slots, *fresh])
            log.info("added %d ports to the pool", len(fresh))
            return fresh

    async def set_reserved(self, ip: str, port: int, *, reserved: bool) -> PortView:
        """Reserve (compare-and-set: 409 when already in use) or release a port."""
        async with self.lock:
            await self.refresh()
            self._require_writable()
            entry = self._require(ip, port)
            current = self.view(entry)
            if reserved and current.in_use:
                raise PortInUse()
            if not reserved and current.container is not None:
                raise PortBound(current.container)
            if entry.reserved != reserved:
                await self._replace(entry, entry.model_copy(update={"reserved": reserved}))
            return self.view(self._require(ip, port))

    async def delete(self, ip: str, port: int) -> None:
        """Remove a port; a reserved one may go, a bound one may not (:class:`PortBound`)."""
        async with self.lock:
            await self.refresh()
            self._require_writable()
            entry = self._require(ip, port)
            owner = self.bindings().get(entry.binding)
            if owner is not None:
                raise PortBound(owner)
            await self._write([slot for slot in self._pool.slots if slot is not entry])

    async def delete_many(self, keys: list[PortKey]) -> tuple[int, list[Skipped]]:
        """Delete the ports that exist and are not bound; say why each other one stayed."""
        async with self.lock:
            await self.refresh()
            self._require_writable()
            bound = self.bindings()
            doomed: set[PortKey] = set()
            skipped: list[Skipped] = []
            for ip, port in keys:
                entry = self.lookup(ip, port)
                if entry is None or entry.key in doomed:
                    skipped.append(Skipped(ip=ip, port=port, reason=PortNotFound.message))
                    continue
                owner = bound.get(entry.binding)
                if owner is not None:
                    skipped.append(Skipped(ip=ip, port=port, reason=PortBound(owner).message))
                    continue
                doomed.add(entry.key)
            if doomed:
                await self._write(
                    [
                        slot
                        for slot in self._pool.slots
                        if not (isinstance(slot, PortEntry) and slot.key in doomed)
                    ]
                )
            return len(doomed), skipped

    async def random(self, *, protocol: Protocol | None, ip: str | None, reserve: bool) -> PortView:
        """A free port that can be bound now, chosen at random; reserved when asked."""
        async with self.lock:
            await self.refresh()
            if reserve:
                self._require_writable()
            bound = self.bindings()
            candidates = [
                entry
                for entry in self._pool.entries
                if not entry.reserved
                and entry.binding not in bound
                and (protocol is None or entry.protocol == protocol)
                and (ip is None or entry.ip == ip)
            ]
            random.SystemRandom().shuffle(candidates)
            chosen = await asyncio.to_thread(self._prober, [entry.binding for entry in candidates])
            if chosen is None:
                raise NoAvailablePorts()
            entry = self._require(chosen[0], chosen[1])
            if reserve:
                entry = entry.model_copy(update={"reserved": True})
                await self._replace(self._require(chosen[0], chosen[1]), entry)
            return self.view(entry, bound)

    def any_reserved(self, keys: list[PortKey]) -> bool:
        """Whether one of these ports is reserved in the pool as last read (no I/O)."""
        wanted = set(keys)
        return any(entry.reserved and entry.key in wanted for entry in self._pool.entries)

    async def release_reservations_locked(self, keys: list[PortKey]) -> None:
        """Clear ``reserved`` on these ports (a container now binds them).

        The caller holds :attr:`lock`; unknown ports are ignored.
        """
        wanted = set(keys)
        slots = [
            slot.model_copy(update={"reserved": False})
            if isinstance(slot, PortEntry) and slot.key in wanted and slot.reserved
            else slot
            for slot in self._pool.slots
        ]
        if any(new is not old for new, old in zip(slots, self._pool.slots, strict=True)):
            await self._write(slots)

    async def _replace(self, old: PortEntry, new: PortEntry) -> None:
        await self._write([new if slot is old else slot for slot in self._pool.slots])


def _exists(key: PortKey) -> str:
    return f"{PortExists.message}: {format_key(key)}"
