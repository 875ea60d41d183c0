"""The node watch stream: every container's and port's state, then one event per change.

Objects are recomputed on hints (observed changes, desired edits, pool writes) and
compared with what was last sent: only real differences get a new resource version, so
a periodic resync that changes nothing sends nothing. Recent changes are kept in a ring
so a client reconnecting with ``since`` gets what it missed; :meth:`NodeWatch.publish`
adds events that are not state (SFTP ``activity``) to the same ring. It must not change
state.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("lightd.watch")

# How long port changes after a desired write are gathered before one refresh of them.
PORTS_DELAY_SECONDS = 0.05

WatchSink = Callable[[dict[str, Any]], None]
ContainerViews = Callable[[], dict[str, dict[str, Any]]]
ContainerView = Callable[[str], dict[str, Any] | None]
PortViews = Callable[[], dict[str, dict[str, Any]]]
PortView = Callable[[str], dict[str, Any] | None]
PortKeysOf = Callable[[str], set[str]]


class NodeWatch:
    def __init__(
        self,
        *,
        container_view: ContainerView,
        container_views: ContainerViews,
        port_views: PortViews,
        port_view: PortView | None = None,
        port_keys_of: PortKeysOf | None = None,
        history: int = 1000,
    ) -> None:
        self._container_view = container_view
        self._container_views = container_views
        self._port_views = port_views
        self._port_view = port_view
        self._port_keys_of = port_keys_of
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=history)
        self._sinks: set[WatchSink] = set()
        self._ports_pending = False
        self._ports_all = False  # the pending refresh looks at every entry
        self._ports_of: set[str] = set()  # else at the ports of these containers
        self._ports_by_container: dict[str, set[str]] = {}  # as last sent
        self.resource_version = 0

    def prime(self) -> None:
        """Take the current state as the baseline (at start, before anyone watches)."""
        for key, obj in self._container_views().items():
            self._objects[("container", key)] = obj
        for key, obj in self._port_views().items():
            self._index_port(key, self._objects.get(("port", key)), obj)
            self._objects[("port", key)] = obj

    def subscribe(self, sink: WatchSink) -> None:
        self._sinks.add(sink)

    def unsubscribe(self, sink: WatchSink) -> None:
        self._sinks.discard(sink)

    def snapshot(self) -> dict[str, Any]:
        containers = [o for (kind, _), o in sorted(self._objects.items()) if kind == "container"]
        ports = [o for (kind, _), o in sorted(self._objects.items()) if kind == "port"]
        return {
            "event": "snapshot",
            "resource_version": self.resource_version,
            "containers": containers,
            "ports": ports,
        }

    def since(self, version: int) -> list[dict[str, Any]] | None:
        """Changes after ``version``, or None when they are no longer all in the ring."""
        if version > self.resource_version or version < 0:
            return None
        if version == self.resource_version:
            return []
        oldest = self._log[0]["resource_version"] if self._log else self.resource_version + 1
        if version + 1 < oldest:
            return None
        return [event for event in self._log if event["resource_version"] > version]

    def refresh_container(self, internal_id: str) -> None:
        self._diff("container", internal_id, self._container_view(internal_id))

    def refresh_ports(self) -> None:
        current = self._port_views()
        known = {key for kind, key in self._objects if kind == "port"}
        for key in sorted(known | set(current)):
            self._diff("port", key, current.get(key))

    def refresh_ports_soon(self, internal_id: str | None = None) -> None:
        """Refresh the ports ``internal_id`` binds now or bound when last sent (None:
        every entry), :data:`PORTS_DELAY_SECONDS` after the first call of a burst, for
        every call until then.

        Each desired write asks for it: a burst of 100 POSTs would otherwise cost 100
        passes over 100 ports; with the container named, a pass looks at its ports only.
        Off a loop: at once.
        """
        if internal_id is None or self._port_view is None or self._port_keys_of is None:
            self._ports_all = True
        else:
            self._ports_of.add(internal_id)
        if self._ports_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._refresh_pending_ports()
            return
        self._ports_pending = True
        loop.call_later(PORTS_DELAY_SECONDS, self._refresh_pending_ports)

    def _refresh_pending_ports(self) -> None:
        self._ports_pending = False
        containers, self._ports_of = self._ports_of, set()
        if self._ports_all or self._port_view is None or self._port_keys_of is None:
            self._ports_all = False
            self.refresh_ports()
            return
        keys: set[str] = set()
        for internal_id in containers:
            keys |= self._ports_by_container.get(internal_id, set())
            keys |= self._port_keys_of(internal_id)
        for key in sorted(keys):
            self._diff("port", key, self._port_view(key))

    def refresh_all(self) -> None:
        current = self._container_views()
        known = {key for kind, key in self._objects if kind == "container"}
        for key in sorted(known | set(current)):
            self._diff("container", key, current.get(key))
        self.refresh_ports()

    def set_object(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        """Report an object of another room (e.g. ``backup``); None: it is gone."""
        self._diff(kind, key, obj)

    def _diff(self, kind: str, key: str, obj: dict[str, Any] | None) -> None:
        previous = self._objects.get((kind, key))
        if obj == previous:
            return
        if kind == "port":
            self._index_port(key, previous, obj)
        if obj is None:
            change = "DELETED"
            del self._objects[(kind, key)]
            obj = previous
        else:
            change = "ADDED" if previous is None else "MODIFIED"
            self._objects[(kind, key)] = obj
        self.resource_version += 1
        event = {
            "event": "changed",
            "type": change,
            "kind": kind,
            "id": key,
            "resource_version": self.resource_version,
            "object": obj,
        }
        self._log.append(event)
        self._emit([event])

    def _index_port(
        self, key: str, previous: dict[str, Any] | None, obj: dict[str, Any] | None
    ) -> None:
        """Keep :attr:`_ports_by_container` true to the port objects sent."""
        before = previous.get("container") if previous is not None else None
        after = obj.get("container") if obj is not None else None
        if before == after:
            return
        if before is not None:
            held = self._ports_by_container.get(before)
            if held is not None:
                held.discard(key)
                if not held:
                    del self._ports_by_container[before]
        if after is not None:
            self._ports_by_container.setdefault(after, set()).add(key)

    def publish(self, kind: str, key: str, obj: dict[str, Any]) -> None:
        """An event that is not a state change (e.g. ``activity``): sent and kept in the ring."""
        self.resource_version += 1
        event = {
            "event": kind,
            "kind": kind,
            "id": key,
            "resource_version": self.resource_version,
            "object": obj,
        }
        self._log.append(event)
        self._emit([event])

    def _emit(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            for sink in list(self._sinks):
                try:
                    sink(event)
                except Exception:
                    log.exception("watch sink failed")
