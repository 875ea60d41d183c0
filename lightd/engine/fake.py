"""An in-memory :class:`~lightd.engine.base.Engine` for tests: deterministic, no I/O.

It keeps containers and images in dictionaries, reports them as the real engine does
(:class:`ActualContainer`), and lets a test inject faults: the next call of a kind fails
transient, conflict or not-found (:meth:`FakeEngine.fail_next`); the whole engine goes
away and comes back (:meth:`go_away`, :meth:`come_back`); a container exits with a code
(:meth:`exit`). Time is a number the test moves (:attr:`now`), never the wall clock.
Install containers exit at once with :attr:`install_exit_code` unless
:attr:`installs_run` is set; a graceful signal, or a line in :attr:`stop_lines` on
stdin, stops a container with code 0. Streams block their reader's thread until fed,
ended or closed, like the real ones. It starts no thread of its own and must stay free
of docker and of any real I/O.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

from lightd.engine.records import (
    LABEL_INTERNAL_ID,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    ActualContainer,
    BriefContainer,
    CreateRequest,
    EngineEvent,
    EngineStatus,
    Resources,
    Role,
    container_name,
)
from lightd.errors import (
    EngineConflict,
    EngineError,
    EngineNotFound,
    EngineUnavailable,
    ImageNotFound,
)

T = TypeVar("T")
Fault = Literal["transient", "conflict", "not_found", "image_not_found"]
UNREACHABLE = "Docker engine unreachable"


def fault_error(fault: Fault | EngineError) -> EngineError:
    """The lightd error the real engine's translation gives for such a failure."""
    if isinstance(fault, EngineError):
        return fault
    if fault == "transient":
        return EngineUnavailable(UNREACHABLE)
    if fault == "conflict":
        return EngineConflict("Conflict. The container name is already in use")
    if fault == "image_not_found":
        return ImageNotFound()
    return EngineNotFound("No such container")


@dataclass
class FakeContainer:
    """One container of the fake engine (mutable, unlike what it reports)."""

    id: str
    name: str
    image: str
    labels: dict[str, str]
    resources: Resources
    request: CreateRequest | None
    running: bool = False
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    output: list[bytes] = field(default_factory=list)
    stdin: list[str] = field(default_factory=list)


class FakeStream(Generic[T]):
    """A blocking stream fed by the fake engine; ends when closed or ended."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self._error: EngineError | None = None

    def push(self, item: T) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def end(self, error: EngineError | None = None) -> None:
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()

    def close(self) -> None:
        self.end()

    def __iter__(self) -> Iterator[T]:
        while True:
            with self._cond:
                while not self._items and not self._ended:
                    self._cond.wait()
                if self._items:
                    item = self._items.popleft()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield item


class FakeEngine:
    """The engine of one node, in memory. ``calls`` records every call by kind."""

    def __init__(self, *, node_id: str = "node-fake", images: tuple[str, ...] = ()) -> None:
        self.node_id = node_id
        self.now = 1_000_000.0
        self.images: set[str] = set(images)
        self.pullable: set[str] = set()
        self.containers: dict[str, FakeContainer] = {}
        self.available = True
        self.installs_run = False
        self.install_exit_code = 0
        self.stop_lines: set[str] = {"stop"}
        self.calls: list[tuple[str, str]] = []
        self._faults: dict[str, deque[EngineError]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self._lines = itertools.count(1)
        self._lock = threading.RLock()
        self._outputs: dict[str, list[FakeStream[bytes]]] = defaultdict(list)
        self._event_streams: list[FakeStream[EngineEvent]] = []
        self._stats_streams: list[FakeStream[dict[str, Any]]] = []

    # -- what a test does to the engine -------------------------------------------

    def fail_next(
        self, kind: str, fault: Fault | EngineError = "transient", *, times: int = 1
    ) -> None:
        """The next ``times`` calls of ``kind`` (a method name, e.g. ``start``) fail."""
        for _ in range(times):
            self._faults[kind].append(fault_error(fault))

    def go_away(self) -> None:
        """Every call fails as unreachable and every stream ends, until :meth:`come_back`."""
        with self._lock:
            self.available = False
            streams: list[FakeStream[Any]] = [*self._event_streams, *self._stats_streams]
            streams += [s for group in self._outputs.values() for s in group]
            self._event_streams.clear()
            self._stats_streams.clear()
            self._outputs.clear()
        for stream in streams:
            stream.end(EngineUnavailable(UNREACHABLE))

    def come_back(self) -> None:
        self.available = True

    def exit(self, name_or_id: str, code: int) -> None:
        """The container's process ends with ``code`` (unasked, as a crash would)."""
        with self._lock:
            found = self._find(name_or_id)
            if found is None:
                raise KeyError(name_or_id)
            self._stop(found, code)

    def add_foreign(self, name: str, *, running: bool = True) -> str:
        """A container lightd does not manage (no labels), e.g. squatting a name."""
        with self._lock:
            cid = self._new_id()
            self.containers[cid] = FakeContainer(
                id=cid,
                name=name,
                image="someone/else",
                labels={},
                resources=Resources(0, 0, 0, 0),
                request=None,
                running=running,
                started_at=self.now if running else None,
            )
            return cid

    def write_output(self, name_or_id: str, text: str) -> None:
        """The container prints ``text`` (lines end with a newline)."""
        with self._lock:
            found = self._find(name_or_id)
            assert found is not None
            for line in text.splitlines():
                data = f"{self._stamp()} {line}\n".encode()
                found.output.append(data)
                for stream in self._outputs.get(found.id, []):
                    stream.push(data)

    def named(self, name: str) -> FakeContainer | None:
        return self._find(name)

    # -- the Engine protocol --------------------------------------------------------

    async def status(self) -> EngineStatus:
        if not self.available:
            return EngineStatus(reachable=False, version=None, api_version=None, error=UNREACHABLE)
        return EngineStatus(reachable=True, version="fake", api_version="1.47", error=None)

    async def inspect(self, name_or_id: str) -> ActualContainer | None:
        self._enter("inspect", name_or_id)
        found = self._find(name_or_id)
        return self._view(found) if found is not None else None

    async def list_managed(self) -> list[ActualContainer]:
        self._enter("list_managed", "")
        return [self._view(c) for c in self.containers.values() if self._managed(c)]

    async def list_brief(self) -> list[BriefContainer]:
        self._enter("list_brief", "")
        return [
            BriefContainer(
                id=c.id,
                name=c.name,
                internal_id=c.labels.get(LABEL_INTERNAL_ID),
                role=c.labels.get(LABEL_ROLE),
                spec_hash=c.labels.get(LABEL_SPEC_HASH),
                running=c.running,
            )
            for c in self.containers.values()
            if self._managed(c)
        ]

    async def image_present(self, image: str) -> bool:
        self._enter("image_present", image)
        return image in self.images

    async def pull(self, image: str) -> None:
        self._enter("pull", image)
        if image not in self.pullable:
            raise EngineNotFound(f"pull access denied for {image}")
        self.images.add(image)

    async def create(self, request: CreateRequest) -> str:
        self._enter("create", request.internal_id)
        with self._lock:
            name = container_name(request.internal_id, request.role)
            if self._find(name) is not None:
                raise EngineConflict(f'Conflict. The container name "/{name}" is already in use')
            if request.image not in self.images:
                raise ImageNotFound()
            labels = {
                LABEL_MANAGED: "true",
                LABEL_NODE: self.node_id,
                LABEL_INTERNAL_ID: request.internal_id,
                LABEL_ROLE: request.role.value,
            }
            if request.spec_hash:
                labels[LABEL_SPEC_HASH] = request.spec_hash
            cid = self._new_id()
            self.containers[cid] = FakeContainer(
                id=cid,
                name=name,
                image=request.image,
                labels=labels,
                resources=request.resources,
                request=request,
            )
            self._event("create", self.containers[cid])
            return cid

    async def start(self, container_id: str) -> None:
        self._enter("start", container_id)
        with self._lock:
            found = self._must(container_id)
            if found.running:
                return
            found.running = True
            found.exit_code = None
            found.started_at = self.now
            found.finished_at = None
            self._event("start", found)
            if found.labels.get(LABEL_ROLE) == Role.INSTALL.value and not self.installs_run:
                self._stop(found, self.install_exit_code)

    async def signal(self, container_id: str, signame: str) -> None:
        self._enter("signal", container_id)
        with self._lock:
            found = self._must(container_id)
            if not found.running:
                raise EngineConflict(f"Container {container_id} is not running")
            self._stop(found, 0)

    async def kill(self, container_id: str) -> None:
        self._enter("kill", container_id)
        with self._lock:
            found = self._must(container_id)
            if found.running:
                self._stop(found, 137)

    async def remove(self, container_id: str) -> None:
        self._enter("remove", container_id)
        with self._lock:
            found = self.containers.pop(container_id, None)
            if found is None:
                return
            found.running = False
            self._end_outputs(found.id)
            self._event("destroy", found)

    async def update_limits(self, container_id: str, resources: Resources) -> None:
        self._enter("update_limits", container_id)
        with self._lock:
            found = self._must(container_id)
            memory_swap = resources.memory_swap if resources.memory else found.resources.memory_swap
            memory = resources.memory if resources.memory else found.resources.memory
            found.resources = replace(resources, memory=memory, memory_swap=memory_swap)

    async def wait_exit(self, container_id: str, *, seconds: float) -> int | None:
        self._enter("wait_exit", container_id)
        found = self._must(container_id)
        return None if found.running else found.exit_code

    async def logs(self, container_id: str, *, tail: int | str = "all") -> bytes:
        self._enter("logs", container_id)
        found = self._must(container_id)
        lines = [raw.partition(b" ")[2] for raw in found.output]
        if isinstance(tail, int):
            lines = lines[-tail:] if tail > 0 else []
        return b"".join(lines)

    async def send_line(self, container_id: str, line: str) -> None:
        self._enter("send_line", container_id)
        with self._lock:
            found = self._must(container_id)
            if not found.running:
                raise EngineConflict(f"Container {container_id} is not running")
            found.stdin.append(line)
            if line in self.stop_lines:
                self._stop(found, 0)

    async def stats_once(self, container_id: str) -> dict[str, Any]:
        self._enter("stats_once", container_id)
        self._must(container_id)
        return {"read": "now", "memory_stats": {"usage": 1024}, "cpu_stats": {}}

    def follow_output(self, container_id: str, *, since: float | None) -> FakeStream[bytes]:
        self._enter("follow_output", container_id)
        with self._lock:
            found = self._must(container_id)
            stream: FakeStream[bytes] = FakeStream()
            for data in found.output:
                stream.push(data)
            if found.running:
                self._outputs[found.id].append(stream)
            else:
                stream.end()
            return stream

    def follow_stats(self, container_id: str) -> FakeStream[dict[str, Any]]:
        self._enter("follow_stats", container_id)
        with self._lock:
            self._must(container_id)
            stream: FakeStream[dict[str, Any]] = FakeStream()
            self._stats_streams.append(stream)
            return stream

    def events(self) -> FakeStream[EngineEvent]:
        self._enter("events", "")
        with self._lock:
            stream: FakeStream[EngineEvent] = FakeStream()
            self._event_streams.append(stream)
            return stream

    def close(self) -> None:
        with self._lock:
            streams: list[FakeStream[Any]] = [*self._event_streams, *self._stats_streams]
            streams += [s for group in self._outputs.values() for s in group]
        for stream in streams:
            stream.end()

    # -- inside ------------------------------------------------------------------

    def _enter(self, kind: str, target: str) -> None:
        with self._lock:
            self.calls.append((kind, target))
            if not self.available:
                raise EngineUnavailable(UNREACHABLE)
            faults = self._faults.get(kind)
            if faults:
                raise faults.popleft()

    def _new_id(self) -> str:
        return f"fake{next(self._ids):060d}"

    def _stamp(self) -> str:
        # Distinct and increasing like the engine's nanosecond stamps (readers skip
        # lines whose stamp they saw).
        return f"{int(self.now):012d}.{next(self._lines):09d}Z"

    def _find(self, name_or_id: str) -> FakeContainer | None:
        found = self.containers.get(name_or_id)
        if found is not None:
            return found
        for container in self.containers.values():
            if container.name == name_or_id:
                return container
        return None

    def _must(self, container_id: str) -> FakeContainer:
        found = self._find(container_id)
        if found is None:
            raise EngineNotFound(f"No such container: {container_id}")
        return found

    def _managed(self, container: FakeContainer) -> bool:
        labels = container.labels
        return labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_NODE) == self.node_id

    def _view(self, container: FakeContainer) -> ActualContainer:
        res = container.resources
        return ActualContainer(
            id=container.id,
            name=container.name,
            managed=self._managed(container),
            internal_id=container.labels.get(LABEL_INTERNAL_ID),
            role=container.labels.get(LABEL_ROLE),
            spec_hash=container.labels.get(LABEL_SPEC_HASH),
            running=container.running,
            status="running" if container.running else "exited",
            exit_code=container.exit_code if container.exit_code is not None else 0,
            started_at=container.started_at,
            finished_at=container.finished_at,
            memory=res.memory,
            memory_swap=res.memory_swap,
            nano_cpus=res.nano_cpus,
            pids_limit=res.pids_limit,
        )

    def _stop(self, container: FakeContainer, code: int) -> None:
        container.running = False
        container.exit_code = code
        container.finished_at = self.now
        self._end_outputs(container.id)
        self._event("die", container)

    def _end_outputs(self, container_id: str) -> None:
        for stream in self._outputs.pop(container_id, []):
            stream.end()

    def _event(self, action: str, container: FakeContainer) -> None:
        if not self._managed(container):
            return
        event = EngineEvent(
            action=action,
            internal_id=container.labels.get(LABEL_INTERNAL_ID),
            attributes=dict(container.labels),  # the engine sends the labels along
            container_id=container.id,
            at=self.now,
        )
        for stream in self._event_streams:
            stream.push(event)
