"""The running node: settings, stores, tokens and the engine, wired once at start.

``Daemon`` owns the lifecycle of every long-lived part (start, reload, stop) and hands
them to the API. It must not serve HTTP (``lightd.api``) or decide convergence
(``lightd.reconcile``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from lightd.auth.master import MasterToken, ensure_master_token, tokens_equal
from lightd.auth.tokens import TokenStore
from lightd.config import ContainersSettings, Settings, load_settings
from lightd.containers.desired import DesiredContainers
from lightd.containers.ingest import DesiredIngest
from lightd.containers.service import ContainerService, bindings_of
from lightd.engine import DockerEngine
from lightd.errors import NotFound
from lightd.logsetup import set_level
from lightd.pool import PortPool
from lightd.reconcile.controller import Controller, ControllerSettings
from lightd.reconcile.planner import Policy
from lightd.reconcile.state import ObservedStore
from lightd.runtime.console import ConsoleHub
from lightd.store import DocumentStore
from lightd.store.watch import FolderWatcher, WatchSettings

log = logging.getLogger("lightd.daemon")

NODE_ID_FILE = "node.id"


def ensure_node_id(data_dir: Path) -> str:
    """This daemon's identity on the engine, kept in ``<data_dir>/node.id``."""
    path = data_dir / NODE_ID_FILE
    try:
        value = path.read_text("utf-8").strip()
    except FileNotFoundError:
        value = ""
    if not value:
        value = uuid.uuid4().hex
        path.write_text(value + "\n", "utf-8")
    return value


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
        self.engine = DockerEngine(settings.docker, node=ensure_node_id(data_dir))
        self.containers = DesiredContainers(self.desired)
        self.ports = PortPool(self.desired, bindings=lambda: bindings_of(self.containers))
        self.observed = ObservedStore(self.data)
        self.consoles = ConsoleHub(
            self.engine,
            ring_lines=settings.containers.console_ring_lines,
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
            settings=controller_settings(settings.containers),
        )
        self.container_service = ContainerService(
            desired=self.containers,
            observed=self.observed.get,
            pool=self.ports,
            resolve_volume=self.resolve_volume,
            hint=self.controller.hint,
            allowed_mount_roots=settings.containers.allowed_mount_roots,
        )
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

    async def _on_desired_change(self, reason: str) -> None:
        await self.ingest.ingest(reason)

    def resolve_volume(self, volume_id: str) -> str:
        """The full id of an existing volume; raises the contract's 404."""
        if self.volume_path(volume_id) is None:
            raise NotFound("Volume not found")
        return volume_id

    def volume_path(self, volume_id: str) -> str | None:
        path = self.settings.storage.data_dir / "volumes" / volume_id
        return str(path) if path.is_dir() else None

    def is_master(self, token: str) -> bool:
        return tokens_equal(token, self.master.value)

    @property
    def auth_enabled(self) -> bool:
        return self.settings.authorization.enabled

    async def start(self) -> None:
        swept = await asyncio.to_thread(self.data.sweep_temp_files)
        swept += await asyncio.to_thread(self.desired.sweep_temp_files)
        if swept:
            log.info("removed %d temp files left by an interrupted write", swept)
        await asyncio.to_thread(self.tokens.load)
        await self.ports.load()
        status = await self.engine.status()
        if status.reachable:
            log.info("docker engine %s answers", status.version)
        else:
            log.warning("docker engine unavailable: %s", status.error)
        # Observed state first, so that the first scan knows which containers exist and
        # a missing or emptied desired folder cannot delete them (the deletion guard).
        await asyncio.to_thread(self.observed.load)
        await self.ingest.ingest("start")
        await self.controller.start()
        await self.watcher.start()

    async def stop(self) -> None:
        await self.watcher.stop()
        await self.controller.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.engine.close()

    def reload(self) -> Settings:
        """Re-read file and environment; apply what can change live. Raises ConfigError."""
        fresh = load_settings(self.config_path)
        self.master = ensure_master_token(
            configured=fresh.authorization.token, data_dir=self.settings.storage.data_dir
        )
        self.settings.authorization = fresh.authorization
        self.settings.remote = fresh.remote
        self.settings.logging = fresh.logging
        set_level(fresh.logging.level)
        log.info("configuration reloaded")
        return self.settings
