"""The one place the backup service meets the rest of the daemon.

:func:`attach` builds the :class:`~lightd.backups.service.BackupService` from a built
``Daemon`` and connects it: the volume's users and the restore hold (the reconciler keeps
held containers stopped whatever their power and returns them to it when released),
``/watch`` (``kind: "backup"``), the containers' sockets (``daemon_message``), the panel
outbox, ``/metrics``, and the schedule runner. ``daemon.py`` calls it once and starts and
stops what it returns. This module must not serve HTTP nor hold state of its own.
"""

from __future__ import annotations

from typing import Any

from lightd.backups.records import BackupRecord
from lightd.backups.scheduler import Scheduler
from lightd.backups.service import BackupService
from lightd.containers.service import volume_users
from lightd.remote.events import Notification
from lightd.spec.observed import RuntimeState


class _DaemonContainers:
    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    def users_of(self, volume_id: str) -> list[str]:
        return list(volume_users(self.daemon.containers, volume_id))

    def hold(self, internal_id: str) -> None:
        self.daemon.controller.held.add(internal_id)
        self.daemon.controller.hint(internal_id)

    def release(self, internal_id: str) -> None:
        self.daemon.controller.held.discard(internal_id)
        self.daemon.controller.hint(internal_id)

    def running(self, internal_id: str) -> bool:
        observed = self.daemon.observed.get(internal_id)
        return observed is not None and observed.state is not RuntimeState.OFFLINE


def backup_notification(server: str, record: BackupRecord, operation: str) -> Notification:
    """The panel's ``backup`` notification: the final state of a backup or a restore."""
    part = record.restore if operation == "restore" and record.restore else record
    body = {
        "event": "backup",
        "server": server,
        "operation": operation,
        "backup_id": record.backup_id,
        "adapter": record.adapter,
        "state": part.state,
        "error": part.error or "",
        "size": str(record.size),
        "checksum": record.checksum or "",
    }
    return Notification("backup", body)


def attach(daemon: Any) -> BackupService:
    """The daemon's backup service, wired (``daemon`` is a built ``lightd.daemon.Daemon``)."""
    settings = daemon.settings
    service = BackupService(
        settings.backups,
        data_dir=settings.storage.data_dir,
        data=daemon.data,
        volumes=daemon.volumes,
        containers=_DaemonContainers(daemon),
        registry=daemon.metrics.registry,
        extract_ratio=settings.volumes.archive_max_ratio,
    )
    service.listeners.changed.append(
        lambda backup_id, view: daemon.watch.set_object("backup", backup_id, view)
    )
    service.listeners.message.append(
        lambda key, text: daemon.container_events.publish(
            key, {"event": "daemon_message", "data": text}
        )
    )

    def tell_panel(record: BackupRecord, operation: str) -> None:
        for key in volume_users(daemon.containers, record.volume_id):
            daemon.remote.notify(key, backup_notification(key, record, operation))

    service.listeners.finished.append(tell_panel)
    service.scheduler = Scheduler(service, daemon)
    return service
