"""The schedule runner and pruning, in process over a real service, volume and store.

The desired documents are a list (the containers are not running, so no console hooks
are sent); the service, its records, the volume and the archives are real.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from lightd.backups.scheduler import Scheduler
from lightd.backups.service import BackupService
from lightd.config import BackupSettings
from lightd.fs import ArchiveLimits, VolumeManager
from lightd.spec.container import BackupSchedule, ContainerSpec
from lightd.store import DocumentStore

DAY = 86400.0


def _service(tmp_path: Path) -> tuple[BackupService, str]:
    data = DocumentStore(tmp_path / "var", file_mode=0o600)
    volumes = VolumeManager(
        tmp_path / "var" / "volumes", meta=data, limits=ArchiveLimits(1 << 30, 10_000, 200.0)
    )
    volume = volumes.create()
    (volume.path / "world.dat").write_bytes(os.urandom(4096))
    service = BackupService(
        BackupSettings(local_dir=tmp_path / "store"),
        data_dir=tmp_path / "var",
        data=data,
        volumes=volumes,
    )
    return service, volume.id


def _scheduler(service: BackupService, specs: list[ContainerSpec]) -> Scheduler:
    async def send_command(key: str, command: str) -> None:
        raise AssertionError(f"no container runs, yet {command!r} was sent to {key}")

    return Scheduler(service, specs=lambda: specs, send_command=send_command)


def test_prune_keeps_by_rules_and_never_manual(tmp_path: Path) -> None:
    async def scenario() -> None:
        service, volume_id = _service(tmp_path)
        await service.start()
        try:
            made = []
            for index in range(5):
                record = await service.create(volume_id, scheduled_for="c1")
                await service.finished(record.backup_id)
                record.created_at = 1_700_000_000 + index * DAY
                service.records.save(record)
                made.append(record.backup_id)
            manual = await service.create(volume_id)
            await service.finished(manual.backup_id)
            scheduler = _scheduler(service, [])
            pruned = await scheduler.prune("c1", BackupSchedule(every_seconds=3600, keep_last=2))
            assert sorted(pruned) == sorted(made[:3])
            left = {r.backup_id for r in service.records.all()}
            assert left == {*made[3:], manual.backup_id}
            names = sorted(os.listdir(tmp_path / "store"))
            assert names == sorted(f"{b}.tar.gz" for b in left)
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_tick_runs_due_backups_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        service, volume_id = _service(tmp_path)
        await service.start()
        spec = ContainerSpec.model_validate(
            {
                "internal_id": "c1",
                "image": "busybox:latest",
                "volume_id": volume_id,
                "backups": {"every_seconds": 3600, "keep_last": 3},
            }
        )
        scheduler = _scheduler(service, [spec])
        try:
            now = 1_900_000_000.0
            assert scheduler.tick(now) == ["c1"]
            assert scheduler.tick(now) == []  # already running
            await asyncio.gather(*scheduler._jobs)
            records = service.scheduled("c1")
            assert len(records) == 1 and records[0].state == "done"
            records[0].created_at = now
            assert scheduler.tick(now + 1800) == []  # not due yet
            assert scheduler.tick(now + 3600) == ["c1"]
            await asyncio.gather(*scheduler._jobs)
            assert len(service.scheduled("c1")) == 2
        finally:
            await scheduler.stop()
            await service.stop()

    asyncio.run(scenario())


def test_plan_shows_a_changed_schedule() -> None:
    from lightd.cli.plan import ChangeKind, Current, diff

    base = {"internal_id": "c1", "image": "busybox:latest", "volume_id": "a" * 8}
    old = ContainerSpec.model_validate({**base, "backups": {"every_seconds": 3600}})
    new = ContainerSpec.model_validate({**base, "backups": {"every_seconds": 7200}})
    changes = diff(
        wanted={"c1": new},
        current={"c1": Current("c1", document=old, exists=True, running=True)},
        invalid=set(),
    )
    assert [c.kind for c in changes] == [ChangeKind.UPDATE]
    assert "backups" in changes[0].detail and "7200" in changes[0].detail
