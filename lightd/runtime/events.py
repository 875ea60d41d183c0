"""Lifecycle events of each container for its watchers (``event`` and ``daemon_message``).

Observed-state changes are turned into the contract's events by a pure function and
handed to the subscribers of that container. It must not change any state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState

log = logging.getLogger("lightd.events")

EventSink = Callable[[dict[str, Any]], None]

INSTALL_EVENTS = {
    InstallState.INSTALLING: "installing",
    InstallState.READY: "ready",
    InstallState.FAILED: "failed",
}
RUNTIME_EVENTS = {
    RuntimeState.STARTING: "starting",
    RuntimeState.RUNNING: "running",
    RuntimeState.STOPPING: "stopping",
    RuntimeState.OFFLINE: "exit",
}


def state_event(observed: ObservedContainer) -> dict[str, Any]:
    """The event describing where a container is now (sent to a new watcher)."""
    if observed.install_state is not InstallState.READY:
        return {"event": "event", "data": INSTALL_EVENTS[observed.install_state]}
    return {"event": "event", "data": RUNTIME_EVENTS[observed.state]}


def lifecycle_events(
    old: ObservedContainer | None, new: ObservedContainer | None
) -> list[dict[str, Any]]:
    """The events one observed change means, in order (pure)."""
    if new is None:
        return [{"event": "daemon_message", "data": "Container deleted"}]
    events: list[dict[str, Any]] = []
    if (
        old is None
        or old.install_state is not new.install_state
        or (
            new.install_state is InstallState.INSTALLING
            and old.install_started_at != new.install_started_at
        )
    ):
        events.append({"event": "event", "data": INSTALL_EVENTS[new.install_state]})
    if old is not None and old.state is not new.state:
        events.append({"event": "event", "data": RUNTIME_EVENTS[new.state]})
        if new.state is RuntimeState.RUNNING:
            events.append({"event": "daemon_message", "data": "Container started"})
    if new.last_error and (old is None or old.last_error != new.last_error):
        events.append({"event": "daemon_message", "data": new.last_error})
    return events


class ContainerEvents:
    """Subscribers per container, fed from the observed store's change listener."""

    def __init__(self) -> None:
        self._sinks: dict[str, set[EventSink]] = {}

    def subscribe(self, internal_id: str, sink: EventSink) -> None:
        self._sinks.setdefault(internal_id, set()).add(sink)

    def unsubscribe(self, internal_id: str, sink: EventSink) -> None:
        sinks = self._sinks.get(internal_id)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self._sinks[internal_id]

    def on_observed(self, old: ObservedContainer | None, new: ObservedContainer | None) -> None:
        current = new if new is not None else old
        if current is None or current.internal_id not in self._sinks:
            return
        key = current.internal_id
        for event in lifecycle_events(old, new):
            self.publish(key, event)

    def publish(self, internal_id: str, event: dict[str, Any]) -> None:
        for sink in list(self._sinks.get(internal_id, ())):
            try:
                sink(event)
            except Exception:
                log.exception("event sink failed")
