"""The one place the backup service meets the rest of the daemon.

:func:`attach` builds the :class:`~lightd.backups.service.BackupService` from the parts
the daemon built and connects it: the volume's users and the restore hold (the reconciler
keeps held containers stopped whatever their power and returns them to it when
released), ``/watch`` (``kind: "backup"``), the containers' sockets (``daemon_message``),
the panel outbox, ``/metrics``, and the schedule runner. ``daemon.py`` calls it once and
starts and stops what it returns. This module must not serve HTTP nor hold state of its
own, and it reaches the reconciler only through the two callables it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lightd.backups.records import BackupRecord
from lightd.backups.scheduler import Scheduler, SendCommand
from lightd.backups.service import BackupService
from lightd.config import Settings
from lightd.desired.documents import DesiredContainers
from lightd.desired.service import volume_users
from lightd.fs import VolumeManager
from lightd.metrics import Metrics
from lightd.remote.events import Notification
from lightd.remote.notifier import Notifier
from lightd.runtime.events import ContainerEvents
from lightd.runtime.watch import NodeWatch
from lightd.spec.observed import RuntimeState
from lightd.store import DocumentStore
from lightd.store.observed import ObservedStore


@dataclass(frozen=True)
class _Containers:
    """The service's view of the containers (see ``backups.service.Containers``)."""

    desired: DesiredContainers
    observed: ObservedStore
    keep_stopped: Callable[[str], None]
    let_run: Callable[[str], None]

    def users_of(self, volume_id: str) -> list[str]:
        return list(volume_users(self.desired, volume_id))

    def hold(self, internal_id: str) -> None:
        self.keep_stopped(internal_id)

    def release(self, internal_id: str) -> None:
        self.let_run(internal_id)

    def running(self, internal_id: str) -> bool:
        observed = self.observed.get(internal_id)
        return observed is not None and observed.state is not RuntimeState.OFFLINE


def backup_notification(server: str, record: BackupRecord, operation: str) -> Notification:
    """The panel's ``backup`` notification: the final state of a backup or a restore."""
    part = record.restore if operation == "restore" and record.restore else record
    body: dict[str, str | int | float] = {
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


def attach(
    *,
    settings: Settings,
    data: DocumentStore,
    volumes: VolumeManager,
    desired: DesiredContainers,
    observed: ObservedStore,
    keep_stopped: Callable[[str], None],
    let_run: Callable[[str], None],
    send_command: SendCommand,
    watch: NodeWatch,
    events: ContainerEvents,
    remote: Notifier,
    metrics: Metrics,
) -> BackupService:
    """The daemon's backup service, wired to the parts it reports to."""
    service = BackupService(
        settings.backups,
        data_dir=settings.storage.data_dir,
        data=data,
        volumes=volumes,
        containers=_Containers(desired, observed, keep_stopped, let_run),
        registry=metrics.registry,
        extract_ratio=settings.volumes.archive_max_ratio,
    )
    service.listeners.changed.append(
        lambda backup_id, view: watch.set_object("backup", backup_id, view)
    )
    service.listeners.message.append(
        lambda key, text: events.publish(key, {"event": "daemon_message", "data": text})
    )

    def tell_panel(record: BackupRecord, operation: str) -> None:
        for key in volume_users(desired, record.volume_id):
            remote.notify(key, backup_notification(key, record, operation))

    service.listeners.finished.append(tell_panel)
    service.scheduler = Scheduler(service, specs=desired.all, send_command=send_command)
    return service
