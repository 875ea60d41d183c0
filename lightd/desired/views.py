"""How containers and ports are shown: desired spec and observed state merged into answers.

:func:`container_view` is pure: the same function serves ``GET /containers/<id>`` and the
node watch stream, so both always agree. :class:`Views` applies it to the current
documents and observed state, keeps the encoded ``GET /containers`` list until something
changes, shows the port pool, and counts states for the metrics gauges. It must not write
anything, read files or call the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from lightd.desired.documents import DesiredContainers
from lightd.desired.effective import EffectiveDesired
from lightd.metrics import count_states
from lightd.spec.container import ContainerSpec
from lightd.spec.observed import ObservedContainer
from lightd.spec.ports import BindingKey, PortEntry, format_key


class ObservedReader(Protocol):
    """The observed-state store as the views read it."""

    def get(self, internal_id: str) -> ObservedContainer | None: ...


class PortViewLike(Protocol):
    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def reserved(self) -> bool: ...
    @property
    def container(self) -> str | None: ...
    @property
    def in_use(self) -> bool: ...


class PortsReader(Protocol):
    """The port pool as the views read it (:class:`lightd.pool.PortPool`)."""

    bindings: Callable[[], Mapping[BindingKey, str]]

    def entries(self) -> Sequence[PortEntry]: ...

    def lookup(self, ip: str, port: int) -> PortEntry | None: ...

    def view(
        self, entry: PortEntry, bound: Mapping[BindingKey, str] | None = None
    ) -> PortViewLike: ...


def container_view(
    spec: ContainerSpec,
    observed: ObservedContainer | None,
    *,
    document_error: str | None,
    revision_desired: str | None,
) -> dict[str, Any]:
    obs = observed or ObservedContainer(internal_id=spec.internal_id)
    return {
        "internal_id": spec.internal_id,
        "container_id": obs.container_id,
        "volume_id": spec.volume_id,
        "image": spec.image,
        "startup_command": spec.startup_command,
        "start_pattern": spec.start_pattern,
        "install_state": obs.install_state.value,
        "state": obs.state.value,
        "power": spec.power.value,
        "ports": [p.model_dump() for p in spec.ports],
        "limits": spec.limits.model_dump(),
        "mount": dict(spec.mount),
        "environment": dict(spec.environment),
        "last_error": obs.last_error,
        "exit_code": obs.exit_code,
        "install_exit_code": obs.install_exit_code,
        "crash_count": obs.crash_count,
        "engine_available": obs.engine_available,
        "revision_desired": revision_desired,
        "revision_applied": obs.revision_applied,
        "document_error": document_error,
        "created_at": int(obs.created_at),
        "updated_at": int(obs.updated_at),
    }


class Views:
    """The answers built from desired documents, observed state and the port pool."""

    def __init__(
        self,
        *,
        desired: DesiredContainers | EffectiveDesired,
        observed: ObservedReader,
        ports: PortsReader,
    ) -> None:
        self._desired = desired
        self._observed = observed
        self._ports = ports
        self._list_body: bytes | None = None
        # The pool's entries by their watch key, for the entries tuple it was built from.
        self._entry_index: tuple[Sequence[PortEntry], dict[str, PortEntry]] | None = None

    def changed(self) -> None:
        """Desired or observed state changed: the cached list is stale."""
        self._list_body = None

    def exists(self, internal_id: str) -> bool:
        """True when the container has a (last good) spec."""
        return self._desired.get(internal_id) is not None

    def container(self, internal_id: str) -> dict[str, Any] | None:
        spec = self._desired.get(internal_id)
        if spec is None:
            return None
        problem = self._desired.problem(internal_id)
        return container_view(
            spec,
            self._observed.get(internal_id),
            document_error=str(problem) if problem else None,
            revision_desired=self._desired.digest(internal_id),
        )

    def containers(self) -> dict[str, dict[str, Any]]:
        """Every container with a spec, by internal_id."""
        return {key: view for key in self._desired.ids() if (view := self.container(key))}

    def container_list_body(self) -> bytes:
        """The encoded ``GET /containers`` answer, rebuilt only after a change.

        Panels poll this list; with hundreds of containers, building and encoding it on
        every request would dominate the route's cost.
        """
        if self._list_body is None:
            items = []
            for spec in self._desired.all():
                observed = self._observed.get(spec.internal_id)
                items.append(
                    {
                        "internal_id": spec.internal_id,
                        "container_id": observed.container_id if observed else None,
                        "install_state": observed.install_state.value if observed else "installing",
                        "image": spec.image,
                        "state": observed.state.value if observed else "offline",
                    }
                )
            self._list_body = orjson.dumps({"containers": items})
        return self._list_body

    def port_views(self) -> dict[str, dict[str, Any]]:
        bound = self._ports.bindings()
        views = {}
        for entry in self._ports.entries():
            view = self._ports.view(entry, bound)
            views[format_key((view.ip, view.port))] = _port_dict(view)
        return views

    def port_view(self, key: str) -> dict[str, Any] | None:
        """One entry of :meth:`port_views` (None: no such entry), without the others."""
        entries = self._ports.entries()
        if self._entry_index is None or self._entry_index[0] is not entries:
            self._entry_index = (entries, {format_key(e.key): e for e in entries})
        entry = self._entry_index[1].get(key)
        if entry is None:
            return None
        return _port_dict(self._ports.view(entry, self._ports.bindings()))

    def port_keys_of(self, internal_id: str) -> set[str]:
        """The keys of :meth:`port_views` that the container's document binds now."""
        spec = self._desired.get(internal_id)
        if spec is None:
            return set()
        found = (self._ports.lookup(p.ip, p.port) for p in spec.ports)
        return {format_key(entry.key) for entry in found if entry is not None}

    def state_pairs(self) -> list[tuple[str, str]]:
        """(install_state, state) of every container with a spec, for the gauges."""
        pairs = []
        for key in self._desired.ids():
            observed = self._observed.get(key)
            pairs.append(
                (observed.install_state.value, observed.state.value)
                if observed is not None
                else ("installing", "offline")
            )
        return pairs

    def metric_state(
        self,
        *,
        queue_depth: int,
        retries: int,
        container_sockets: int,
        watch_sockets: int,
        engine_up: bool,
        extra: list[tuple[str, str, float]],
    ) -> dict[str, Any]:
        """Current figures for the metrics gauges (in memory only); the caller adds its own."""
        ports = self.port_views()
        return {
            "containers": count_states(self.state_pairs()),
            "pool_size": len(ports),
            "pool_in_use": sum(1 for view in ports.values() if view["in_use"]),
            "queue_depth": queue_depth,
            "retries": retries,
            "container_sockets": container_sockets,
            "watch_sockets": watch_sockets,
            "engine_up": 1 if engine_up else 0,
            "extra": extra,
        }


def _port_dict(view: PortViewLike) -> dict[str, Any]:
    return {
        "ip": view.ip,
        "port": view.port,
        "protocol": view.protocol,
        "reserved": view.reserved,
        "in_use": view.in_use,
        "container": view.container,
    }
