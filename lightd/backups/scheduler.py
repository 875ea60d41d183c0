"""Runs the backups container documents schedule, and prunes them by their keep rules.

A task of its own beside the reconciler: every few seconds it reads the desired
documents' ``backups`` sections and, for each container whose backup is due
(:mod:`lightd.backups.schedule`), writes the ``before_commands`` to its console when it
runs, waits ``command_wait_seconds``, backs its volume up, writes the
``after_commands``, then prunes the backups that schedule made with
:mod:`lightd.backups.retention` (manual backups are never pruned). It reads documents
and never writes them; it must not touch the engine except through the console send
path it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from lightd.backups import retention, schedule
from lightd.errors import LightdError
from lightd.spec.container import BackupSchedule, ContainerSpec

if TYPE_CHECKING:
    from lightd.backups.service import BackupService

log = logging.getLogger("lightd.backups.scheduler")
CHECK_SECONDS = 5.0


# Writes one console line to a running container (by internal_id); LightdError otherwise.
SendCommand = Callable[[str, str], Awaitable[None]]


class Scheduler:
    def __init__(
        self,
        service: BackupService,
        *,
        specs: Callable[[], Iterable[ContainerSpec]],
        send_command: SendCommand,
    ) -> None:
        self.service = service
        self._specs = specs
        self._send_command = send_command
        self.check_seconds = CHECK_SECONDS
        self._running: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="backup-schedule")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._jobs) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                self.tick(time.time())
            except Exception:
                log.exception("backup schedule check failed")
            await asyncio.sleep(self.check_seconds)

    def last_started(self, internal_id: str) -> float | None:
        made = self.service.scheduled(internal_id)
        return max((r.created_at for r in made), default=None)

    def tick(self, now: float) -> list[str]:
        """Start the due backups; the keys started."""
        started = []
        for spec in self._specs():
            section: BackupSchedule | None = spec.backups
            key = spec.internal_id
            if section is None or key in self._running:
                continue
            if not schedule.is_due(self.last_started(key), section.every_seconds, now):
                continue
            self._running.add(key)
            job = asyncio.get_running_loop().create_task(
                self.run(key, spec.volume_id, section), name=f"backup-schedule-{key}"
            )
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)
            started.append(key)
        return started

    async def _console(self, key: str, commands: list[str]) -> None:
        if not commands or not self.service.containers.running(key):
            return
        for command in commands:
            try:
                await self._send_command(key, command)
            except LightdError as exc:
                log.warning("%s: backup hook %r not sent: %s", key, command, exc.message)

    async def run(self, key: str, volume_id: str, section: BackupSchedule) -> None:
        try:
            await self._console(key, section.before_commands)
            if section.before_commands and section.command_wait_seconds:
                await asyncio.sleep(section.command_wait_seconds)
            try:
                record = await self.service.create(
                    volume_id, adapter=section.adapter, ignore=section.ignore, scheduled_for=key
                )
            except LightdError as exc:
                log.warning("%s: scheduled backup not started: %s", key, exc.message)
                return
            await self.service.finished(record.backup_id)
            await self._console(key, section.after_commands)
            await self.prune(key, section)
        finally:
            self._running.discard(key)

    async def prune(self, key: str, section: BackupSchedule) -> list[str]:
        rules = retention.KeepRules(section.keep_last, section.keep_daily, section.keep_weekly)
        done = [r for r in self.service.scheduled(key) if r.state == "done"]
        items = [retention.Item(r.backup_id, r.created_at) for r in done]
        pruned = []
        for backup_id in retention.to_prune(items, rules):
            record = self.service.records.get(backup_id)
            if record is None:
                continue
            with contextlib.suppress(LightdError):
                await self.service.delete(record.volume_id, backup_id)
                pruned.append(backup_id)
        # Failed scheduled backups hold nothing; keep only the newest few of them.
        failed = [r for r in self.service.scheduled(key) if r.state == "failed"]
        for record in sorted(failed, key=lambda r: r.created_at)[:-3]:
            with contextlib.suppress(LightdError):
                await self.service.delete(record.volume_id, record.backup_id)
        return pruned
