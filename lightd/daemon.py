"""The running node: settings, stores, tokens and the engine, wired once at start.

``Daemon`` owns the lifecycle of every long-lived part (start, reload, stop) and hands
them to the API. It must not serve HTTP (``lightd.api``) or decide convergence
(``lightd.reconcile``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from lightd.auth.master import MasterToken, ensure_master_token, tokens_equal
from lightd.auth.tokens import TokenStore
from lightd.config import Settings, load_settings
from lightd.engine import DockerEngine
from lightd.fs import ArchiveLimits, VolumeManager
from lightd.logsetup import set_level
from lightd.store import DocumentStore

log = logging.getLogger("lightd.daemon")


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
        self.engine = DockerEngine(settings.docker)
        # users_of: the containers engineer wires it to the container documents.
        self.volumes = VolumeManager(
            data_dir / "volumes",
            meta=self.data,
            limits=ArchiveLimits(
                max_total_bytes=settings.volumes.archive_max_total_bytes,
                max_entries=settings.volumes.archive_max_entries,
                max_ratio=settings.volumes.archive_max_ratio,
            ),
        )
        self._tasks: list[asyncio.Task[None]] = []

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
        status = await self.engine.status()
        if status.reachable:
            log.info("docker engine %s answers", status.version)
        else:
            log.warning("docker engine unavailable: %s", status.error)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.volumes.close()
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
