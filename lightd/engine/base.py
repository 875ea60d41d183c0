"""The engine seam: what lightd asks of a container engine, in lightd's own terms.

An :class:`Engine` is bound to one node (its labels and id are its own business), so no
caller passes a node id or holds a client. ``lightd.engine.docker`` implements it over
docker-py, ``lightd.engine.fake`` in memory for tests. Every failure is an
:class:`~lightd.errors.EngineError`. This module only declares; it must not import
docker or do I/O.
"""

from __future__ import annotations

from typing import Any, Protocol

from lightd.engine.records import (
    ActualContainer,
    BriefContainer,
    CreateRequest,
    EngineEvent,
    EngineStatus,
    Resources,
    Stream,
)


class Engine(Protocol):
    """One node's view of the container engine.

    The ``async`` methods run the engine call off the event loop and retry transient
    failures briefly (longer backoff is the reconciler's). The ``follow_*`` and
    ``events`` methods are blocking and meant for a thread of their own: each returns a
    :class:`Stream` whose ``close()`` may be called from another thread.
    """

    async def status(self) -> EngineStatus:
        """Ping the engine and report its version; never raises."""
        ...

    async def inspect(self, name_or_id: str) -> ActualContainer | None:
        """The container of that name or id, or None when there is none."""
        ...

    async def list_managed(self) -> list[ActualContainer]:
        """This node's containers (lightd's labels and this node's id)."""
        ...

    async def list_brief(self) -> list[BriefContainer]:
        """This node's containers as one list call shows them (no inspect each)."""
        ...

    async def image_present(self, image: str) -> bool: ...

    async def pull(self, image: str) -> None: ...

    async def create(self, request: CreateRequest) -> str:
        """Create (not start) a container with this node's labels; returns its id."""
        ...

    async def start(self, container_id: str) -> None: ...

    async def signal(self, container_id: str, signame: str) -> None: ...

    async def kill(self, container_id: str) -> None:
        """SIGKILL; a container that no longer runs is no error."""
        ...

    async def remove(self, container_id: str) -> None:
        """Force-remove (volumes kept); a container already gone is no error."""
        ...

    async def update_limits(self, container_id: str, resources: Resources) -> None: ...

    async def wait_exit(self, container_id: str, *, seconds: float) -> int | None:
        """Wait for the container to stop; None when it still runs after ``seconds``."""
        ...

    async def logs(self, container_id: str, *, tail: int | str = "all") -> bytes:
        """stdout and stderr so far (no timestamps)."""
        ...

    async def send_line(self, container_id: str, line: str) -> None:
        """Write ``line`` and a newline to the container's stdin."""
        ...

    async def stats_once(self, container_id: str) -> dict[str, Any]:
        """One stats sample (with the previous one, so CPU can be computed)."""
        ...

    def follow_output(self, container_id: str, *, since: float | None) -> Stream[bytes]:
        """Output from ``since`` on, following; every line starts with its timestamp."""
        ...

    def follow_stats(self, container_id: str) -> Stream[dict[str, Any]]:
        """The engine's stats samples, about one a second, decoded."""
        ...

    def events(self) -> Stream[EngineEvent]:
        """Container events of this node's containers."""
        ...

    def close(self) -> None: ...
