"""What the API may use: a frozen set of facades the daemon builds once at start.

The API (REST and WebSockets) receives :class:`Services` instead of the whole daemon:
the desired write paths (``containers``, ``templates``), answers built from state
(``reads``, ``watch``, ``gitops``), console and stats streams (``consoles``), the port
pool, volume files, pulls from URLs, tokens, node status, the open-socket counts, the
SFTP server (``sftp``), backups and transfers. Each facade names what a route needs, so
no route reaches through the daemon's parts. This module must not build anything (that
is :mod:`lightd.daemon`), serve HTTP, or import the Docker implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lightd.auth.master import tokens_equal
from lightd.auth.tokens import Grant, TokenStore
from lightd.backups.service import BackupService
from lightd.config import Settings
from lightd.desired.documents import DesiredContainers, DocumentProblem
from lightd.desired.ingest import DesiredIngest, DesiredStatus, IngestResult
from lightd.desired.service import ContainerNotRunning, ContainerService
from lightd.desired.templates import TemplateService
from lightd.desired.views import Views
from lightd.engine.records import Actual, EngineStatus
from lightd.errors import EngineError
from lightd.fs.files import VolumeFiles
from lightd.metrics import Metrics
from lightd.pool import PortPool
from lightd.remote.notifier import RemoteStatus
from lightd.runtime.console import ConsoleHub, LineSink
from lightd.runtime.events import ContainerEvents, EventSink
from lightd.runtime.stats import StatsHub, StatsSink
from lightd.runtime.watch import NodeWatch
from lightd.sftp import SftpService
from lightd.spec.container import ContainerSpec
from lightd.spec.observed import ObservedContainer, RuntimeState
from lightd.store.install_logs import InstallLogs
from lightd.store.observed import ObservedStore
from lightd.transfer.pull import Pulls
from lightd.transfer.service import Transfers
from lightd.transfer.tokens import TransferTokens


def is_running(observed: ObservedContainer | None) -> bool:
    return (
        observed is not None
        and observed.container_id is not None
        and observed.state in (RuntimeState.STARTING, RuntimeState.RUNNING)
    )


class SocketCounts:
    """Open WebSockets: per container and on the node watch (``/system`` and metrics read)."""

    def __init__(self) -> None:
        self._containers: dict[str, int] = {}
        self._watch = 0

    def of_container(self, internal_id: str) -> int:
        return self._containers.get(internal_id, 0)

    @property
    def containers(self) -> int:
        return sum(self._containers.values())

    @property
    def watch(self) -> int:
        return self._watch

    @contextlib.contextmanager
    def container_socket(self, internal_id: str) -> Iterator[None]:
        self._containers[internal_id] = self._containers.get(internal_id, 0) + 1
        try:
            yield
        finally:
            self._containers[internal_id] -= 1
            if self._containers[internal_id] <= 0:
                del self._containers[internal_id]

    @contextlib.contextmanager
    def watch_socket(self) -> Iterator[None]:
        self._watch += 1
        try:
            yield
        finally:
            self._watch -= 1


class Consoles:
    """A container's console, events and stats, as its watchers and the API see them."""

    def __init__(
        self,
        *,
        consoles: ConsoleHub,
        stats: StatsHub,
        events: ContainerEvents,
        observed: ObservedStore,
        install_logs: InstallLogs,
    ) -> None:
        self._consoles = consoles
        self._stats = stats
        self._events = events
        self._observed = observed
        self._install_logs = install_logs

    def state(self, internal_id: str) -> ObservedContainer:
        """The observed state (an empty record before the first observation)."""
        return self._observed.get(internal_id) or ObservedContainer(internal_id=internal_id)

    def running_container(self, internal_id: str) -> str | None:
        """The engine id of the container while it is starting or running, else None."""
        observed = self._observed.get(internal_id)
        if is_running(observed):
            assert observed is not None
            return observed.container_id
        return None

    async def history(self, internal_id: str, lines: int) -> str:
        """The last ``lines`` console lines: ring buffer, else the engine's log."""
        observed = self._observed.get(internal_id)
        container_id = observed.container_id if observed is not None else None
        return await self._consoles.history(internal_id, container_id=container_id, lines=lines)

    async def send_command(self, internal_id: str, command: str) -> None:
        """Write a console command; :class:`ContainerNotRunning` unless it runs."""
        container_id = self.running_container(internal_id)
        if container_id is None:
            raise ContainerNotRunning()
        await self._consoles.send_command(container_id, command)

    async def install_log(self, internal_id: str) -> str:
        return await asyncio.to_thread(self._install_logs.read, internal_id)

    def subscribe(self, internal_id: str, *, lines: LineSink, events: EventSink) -> None:
        self._consoles.subscribe(internal_id, lines)
        self._events.subscribe(internal_id, events)

    def unsubscribe(
        self, internal_id: str, *, lines: LineSink, events: EventSink, stats: StatsSink
    ) -> None:
        self._consoles.unsubscribe(internal_id, lines)
        self._events.unsubscribe(internal_id, events)
        self._stats.unsubscribe(internal_id, stats)

    def follow_stats(self, internal_id: str, container_id: str, sink: StatsSink) -> None:
        self._stats.subscribe(internal_id, container_id, sink)

    def unfollow_stats(self, internal_id: str, sink: StatsSink) -> None:
        self._stats.unsubscribe(internal_id, sink)

    async def stats_once(
        self, container_id: str, *, internal_id: str | None = None
    ) -> dict[str, Any]:
        return await self._stats.once(container_id, internal_id=internal_id)

    @property
    def console_readers(self) -> int:
        return self._consoles.readers()

    @property
    def stats_readers(self) -> int:
        return self._stats.readers()


class Access:
    """The master token and minted tokens."""

    def __init__(
        self, *, tokens: TokenStore, master: Callable[[], str], enabled: Callable[[], bool]
    ) -> None:
        self._tokens = tokens
        self._master = master
        self._enabled = enabled

    @property
    def auth_enabled(self) -> bool:
        return self._enabled()

    @property
    def master_token(self) -> str:
        return self._master()

    def is_master(self, token: str) -> bool:
        return tokens_equal(token, self._master())

    async def mint(
        self, *, ttl_seconds: int, remove_on_use: bool, container: str | None
    ) -> tuple[str, float]:
        return await self._tokens.mint(
            ttl_seconds=ttl_seconds, remove_on_use=remove_on_use, container=container
        )

    async def revoke(self, token: str) -> bool:
        return await self._tokens.revoke(token)

    def peek(self, token: str) -> Grant | None:
        return self._tokens.peek(token)

    async def use(self, token: str, *, container: str | None) -> Grant | None:
        return await self._tokens.use(token, container=container)


@dataclass(frozen=True)
class MainState:
    exists: bool
    running: bool


@dataclass(frozen=True)
class CurrentContainer:
    """One line of ``GET /desired/containers``: document, observed and actual state."""

    internal_id: str
    spec: ContainerSpec | None
    observed: ObservedContainer
    problem: DocumentProblem | None
    held: bool
    main: MainState | None  # None when the engine could not be asked


class GitOps:
    """The desired folder: its status, an explicit apply, what each container looks like."""

    def __init__(
        self,
        *,
        ingest: DesiredIngest,
        watching: Callable[[], bool],
        desired: DesiredContainers,
        observed: ObservedStore,
        observe: Callable[[str], Awaitable[Actual]],
    ) -> None:
        self._ingest = ingest
        self._watching = watching
        self._desired = desired
        self._observed = observed
        self._observe = observe

    @property
    def status(self) -> DesiredStatus:
        return self._ingest.status

    @property
    def watching(self) -> bool:
        return self._watching()

    def problems(self) -> list[DocumentProblem]:
        return self._ingest.problems()

    async def apply(self, *, allow_mass_delete: bool) -> IngestResult:
        return await self._ingest.ingest("apply", allow_mass_delete=allow_mass_delete)

    async def current(self) -> list[CurrentContainer]:
        held = self._desired.held()
        keys = set(self._desired.ids()) | held
        keys |= {item.internal_id for item in self._observed.all()}
        items = []
        for key in sorted(keys):
            main: MainState | None
            try:
                actual = await self._observe(key)
            except EngineError:
                main = None
            else:
                found = actual.main
                main = MainState(exists=found is not None, running=bool(found and found.running))
            items.append(
                CurrentContainer(
                    internal_id=key,
                    spec=self._desired.get(key),
                    observed=self._observed.get(key) or ObservedContainer(internal_id=key),
                    problem=self._desired.problem(key),
                    held=key in held,
                    main=main,
                )
            )
        return items


class Node:
    """This node: its id, the engine's status, readiness, metrics, panel link, reload."""

    def __init__(
        self,
        *,
        node_id: str,
        metrics: Metrics,
        engine_status: Callable[[], Awaitable[EngineStatus]],
        reconciled: Callable[[], bool],
        engine_up: Callable[[], bool],
        remote_status: Callable[[], RemoteStatus],
        reload: Callable[[], Settings],
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics
        self._engine_status = engine_status
        self._reconciled = reconciled
        self._engine_up = engine_up
        self._remote_status = remote_status
        self._reload = reload

    async def engine_status(self) -> EngineStatus:
        return await self._engine_status()

    @property
    def reconciled(self) -> bool:
        """True once the first reconcile of every container is done."""
        return self._reconciled()

    @property
    def engine_up(self) -> bool:
        return self._engine_up()

    def remote_status(self) -> RemoteStatus:
        return self._remote_status()

    def reload(self) -> Settings:
        """Re-read the configuration and apply what can change live; raises ConfigError."""
        return self._reload()


@dataclass(frozen=True)
class Services:
    """The facades the API works with (``settings`` is read-only for it)."""

    settings: Settings
    containers: ContainerService
    templates: TemplateService
    reads: Views
    watch: NodeWatch
    gitops: GitOps
    consoles: Consoles
    ports: PortPool
    files: VolumeFiles
    pulls: Pulls
    transfer_tokens: TransferTokens
    transfers: Transfers
    tokens: Access
    node: Node
    sockets: SocketCounts
    sftp: SftpService
    backups: BackupService
