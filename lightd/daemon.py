"""The running node: settings, stores, tokens and the engine, wired once at start.

``Daemon`` owns the lifecycle of every long-lived part (start, reload, stop) and hands
them to the API. It must not serve HTTP (``lightd.api``) or decide convergence
(``lightd.reconcile``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from lightd.auth.master import MasterToken, ensure_master_token, tokens_equal
from lightd.auth.node import ensure_node_id
from lightd.auth.tokens import TokenStore
from lightd.backups.attach import attach as attach_backups
from lightd.config import ContainersSettings, Settings, load_settings
from lightd.containers.desired import DesiredContainers
from lightd.containers.ingest import DesiredIngest
from lightd.containers.service import (
    ContainerService,
    bindings_of,
    check_host_limits,
    volume_users,
)
from lightd.containers.views import container_view
from lightd.engine import DockerEngine
from lightd.errors import LightdError
from lightd.fs import ArchiveLimits, VolumeManager
from lightd.logsetup import flush_logs, set_flush_waker, set_level
from lightd.metrics import Metrics, count_states
from lightd.pool import PortPool
from lightd.reconcile.controller import Controller, ControllerSettings
from lightd.reconcile.planner import Policy
from lightd.reconcile.state import ObservedStore
from lightd.remote import Notifier
from lightd.runtime.console import ConsoleHub
from lightd.runtime.events import ContainerEvents
from lightd.runtime.stats import StatsHub
from lightd.runtime.watch import NodeWatch
from lightd.spec.container import ContainerSpec
from lightd.spec.observed import ObservedContainer
from lightd.spec.ports import format_key
from lightd.store import DocumentStore
from lightd.store.watch import FolderWatcher, WatchSettings

log = logging.getLogger("lightd.daemon")


def controller_settings(section: ContainersSettings) -> ControllerSettings:
    return ControllerSettings(
        workers=section.workers,
        resync_seconds=section.resync_seconds,
        policy=Policy(
            install_timeout_seconds=section.install_timeout_seconds,
            crash_backoff_initial_seconds=section.crash_backoff_initial_seconds,
            crash_backoff_max_seconds=section.crash_backoff_max_seconds,
            crash_window_seconds=section.crash_window_seconds,
            crash_max=section.crash_max,
        ),
    )


class Daemon:
    """Everything the API and the background workers share."""

    def __init__(self, settings: Settings, *, config_path: Path | None) -> None:
        self.settings = settings
        self.config_path = config_path
        data_dir = settings.storage.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        settings.storage.desired_dir.mkdir(parents=True, exist_ok=True)
        self.data = DocumentStore(data_dir, file_mode=0o600)
        self.desired = DocumentStore(settings.storage.desired_dir)
        self.master: MasterToken = ensure_master_token(
            configured=settings.authorization.token, data_dir=data_dir
        )
        self.tokens = TokenStore(self.data)
        self.metrics = Metrics()
        self.node_id = ensure_node_id(data_dir)
        self.engine = DockerEngine(settings.docker)
        self.containers = DesiredContainers(self.desired)
        self.ports = PortPool(self.desired, bindings=lambda: bindings_of(self.containers))
        self.observed = ObservedStore(self.data)
        self.remote = Notifier(self.data, settings.remote, observed=self.observed.all)
        self.observed.subscribe(self.remote.on_change)
        self.consoles = ConsoleHub(
            self.engine,
            ring_lines=settings.containers.console_ring_lines,
            throttle_lines=settings.containers.console_throttle_lines,
            throttle_window_seconds=settings.containers.console_throttle_window_ms / 1000,
            on_match=lambda key, cid: self.controller.on_console_match(key, cid),
            on_end=lambda key: self.controller.on_console_end(key),
        )
        self.controller = Controller(
            engine=self.engine,
            desired=self.containers,
            observed=self.observed,
            consoles=self.consoles,
            volume_path=self.volume_path,
            data_dir=data_dir,
            node_id=self.node_id,
            settings=controller_settings(settings.containers),
            metrics=self.metrics,
            admit=self.admit_document,
        )
        self.container_service = ContainerService(
            desired=self.containers,
            observed=self.observed.get,
            pool=self.ports,
            resolve_volume=self.resolve_volume,
            hint=self.controller.hint,
            allowed_mount_roots=settings.containers.allowed_mount_roots,
        )
        self.stats = StatsHub(self.engine)
        self.container_events = ContainerEvents()
        self.watch = NodeWatch(
            container_view=self.container_view,
            container_views=lambda: {
                key: view for key in self.containers.ids() if (view := self.container_view(key))
            },
            port_views=self.port_views,
            history=settings.websocket.watch_history,
        )
        self._list_body: bytes | None = None
        self.sockets: dict[str, int] = {}
        self.watch_sockets = 0
        self.observed.subscribe(self.container_events.on_observed)
        self.observed.subscribe(self._observed_changed)
        self.ports.listeners.append(self.watch.refresh_ports)
        self.ports.listeners.append(self.controller.retry_refused)
        self.volumes = VolumeManager(
            data_dir / "volumes",
            meta=self.data,
            limits=ArchiveLimits(
                max_total_bytes=settings.volumes.archive_max_total_bytes,
                max_entries=settings.volumes.archive_max_entries,
                max_ratio=settings.volumes.archive_max_ratio,
            ),
        )
        self.volumes.users_of = lambda volume_id: volume_users(self.containers, volume_id)
        self.metrics.watch_state(self.metric_state)
        self.ingest = DesiredIngest(
            root=settings.storage.desired_dir,
            desired=self.containers,
            pool=self.ports,
            observed_ids=lambda: [item.internal_id for item in self.observed.all()],
            hint=self.controller.hint,
            max_delete_share=settings.gitops.max_delete_share,
        )
        self.watcher = FolderWatcher(
            settings.storage.desired_dir,
            on_change=self._on_desired_change,
            settings=WatchSettings(
                rescan_seconds=settings.gitops.rescan_seconds,
                debounce_ms=settings.gitops.debounce_ms,
                force_polling=settings.gitops.force_polling,
            ),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.backups = attach_backups(self)

    def container_list_body(self) -> bytes:
        """The encoded ``GET /containers`` answer, rebuilt only after a change.

        Panels poll this list; with hundreds of containers, building and encoding it on
        every request would dominate the route's cost.
        """
        if self._list_body is None:
            items = []
            for spec in self.containers.all():
                observed = self.observed.get(spec.internal_id)
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

    def admit_document(self, spec: ContainerSpec) -> str | None:
        """Why a document may not be applied (hand edits skip the API's checks), or None."""
        try:
            check_host_limits(
                spec,
                allowed_roots=self.settings.containers.allowed_mount_roots,
                host_cpus=os.cpu_count() or 1,
            )
            self.ports.check_bindings(
                [(p.ip, p.port, p.protocol) for p in spec.ports], container=spec.internal_id
            )
        except LightdError as exc:
            return exc.message
        return None

    def metric_state(self) -> dict[str, Any]:
        """Current figures for the metrics gauges (in memory only)."""
        pairs = []
        for key in self.containers.ids():
            observed = self.observed.get(key)
            pairs.append(
                (observed.install_state.value, observed.state.value)
                if observed is not None
                else ("installing", "offline")
            )
        ports = self.port_views()
        queue = self.controller.queue
        return {
            "containers": count_states(pairs),
            "pool_size": len(ports),
            "pool_in_use": sum(1 for view in ports.values() if view["in_use"]),
            "queue_depth": len(queue) if queue is not None else 0,
            "retries": queue.retries if queue is not None else 0,
            "container_sockets": sum(self.sockets.values()),
            "watch_sockets": self.watch_sockets,
            "engine_up": 1 if self.controller.engine_up else 0,
            "extra": [
                (
                    "lightd_panel_outbox_depth",
                    "Panel notifications waiting",
                    len(self.remote.outbox),
                ),
                (
                    "lightd_panel_delivery_failures",
                    "Failed panel delivery attempts since start (retried)",
                    self.remote.failed_attempts,
                ),
                (
                    "lightd_panel_refused",
                    "Panel notifications refused with a 4xx and dropped since start",
                    self.remote.refused,
                ),
            ],
        }

    def container_view(self, internal_id: str) -> dict[str, Any] | None:
        spec = self.containers.get(internal_id)
        if spec is None:
            return None
        problem = self.containers.problem(internal_id)
        return container_view(
            spec,
            self.observed.get(internal_id),
            document_error=str(problem) if problem else None,
            revision_desired=self.containers.digest(internal_id),
        )

    def port_views(self) -> dict[str, dict[str, Any]]:
        bound = self.ports.bindings()
        views = {}
        for entry in self.ports.entries():
            view = self.ports.view(entry, bound)
            key = format_key((view.ip, view.port))
            views[key] = {
                "ip": view.ip,
                "port": view.port,
                "protocol": view.protocol,
                "reserved": view.reserved,
                "in_use": view.in_use,
                "container": view.container,
            }
        return views

    def _observed_changed(
        self, old: ObservedContainer | None, new: ObservedContainer | None
    ) -> None:
        self._list_body = None
        current = new if new is not None else old
        if current is not None:
            self.watch.refresh_container(current.internal_id)

    def _desired_changed(self, internal_id: str) -> None:
        self._list_body = None
        self.watch.refresh_container(internal_id)
        self.watch.refresh_ports()

    async def _on_desired_change(self, reason: str) -> None:
        await self.ingest.ingest(reason)

    def resolve_volume(self, volume_id: str) -> str:
        """The full id of an existing volume (a unique prefix works); 404 otherwise."""
        return self.volumes.resolve(volume_id).id

    def volume_path(self, volume_id: str) -> str | None:
        try:
            return str(self.volumes.resolve(volume_id).path)
        except LightdError:
            return None

    def is_master(self, token: str) -> bool:
        return tokens_equal(token, self.master.value)

    @property
    def auth_enabled(self) -> bool:
        return self.settings.authorization.enabled

    async def start(self) -> None:
        swept = await asyncio.to_thread(self.data.sweep_temp_files)
        swept += await asyncio.to_thread(self.desired.sweep_temp_files)
        swept += await asyncio.to_thread(self.volumes.sweep)
        if swept:
            log.info("removed %d temp files left by an interrupted write", swept)
        await asyncio.to_thread(self.tokens.load)
        await self.ports.load()
        status = await self.engine.status()
        if status.reachable:
            log.info("docker engine %s answers", status.version)
        else:
            log.warning("docker engine unavailable: %s", status.error)
        loop = asyncio.get_running_loop()
        self.stats.bind_loop(loop)

        def desired_changed(key: str) -> None:
            loop.call_soon_threadsafe(self._desired_changed, key)

        self.containers.listeners.append(desired_changed)
        # Observed state first, so that the first scan knows which containers exist and
        # a missing or emptied desired folder cannot delete them (the deletion guard).
        await asyncio.to_thread(self.observed.load)
        await self.ingest.ingest("start")
        await self.remote.load()
        await self.controller.start()
        await self.remote.start()
        await self.watcher.start()
        self.watch.prime()
        await self.backups.start()

    async def stop(self) -> None:
        await self.backups.stop()
        await self.watcher.stop()
        await self.controller.stop()
        self.stats.stop_all()
        await self.remote.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.volumes.close()
        self.engine.close()

    def spawn_log_flusher(self, interval: float = 0.5) -> None:
        """Flush buffered log lines ``interval`` after the first unflushed one.

        (See ``BatchedStreamHandler``.) Nothing written, no wake-up: an idle daemon
        stays asleep.
        """
        loop = asyncio.get_running_loop()
        written = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(written.set)

        async def flush_when_written() -> None:
            try:
                while True:
                    await written.wait()
                    await asyncio.sleep(interval)  # gather a batch
                    written.clear()
                    flush_logs()
            finally:
                set_flush_waker(None)

        set_flush_waker(wake)
        self._tasks.append(asyncio.create_task(flush_when_written(), name="log-flush"))

    def reload(self) -> Settings:
        """Re-read file and environment; apply what can change live. Raises ConfigError."""
        fresh = load_settings(self.config_path)
        self.master = ensure_master_token(
            configured=fresh.authorization.token, data_dir=self.settings.storage.data_dir
        )
        self.settings.authorization = fresh.authorization
        self.settings.remote = fresh.remote
        self.remote.configure(fresh.remote)
        self.settings.logging = fresh.logging
        set_level(fresh.logging.level)
        log.info("configuration reloaded")
        return self.settings
