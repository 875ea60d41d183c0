"""The backup service: runs backups and restores off the event loop, one per volume.

This is the entry point the daemon builds (:class:`BackupService`) and the API calls.
Work runs in its own thread pool, at most ``backups.concurrency`` at a time and one per
volume (backup or restore: the per-volume lock); progress reaches listeners at most once
a second; :meth:`BackupService.stop` cancels what runs. Records are observed state
(:mod:`lightd.backups.records`); at start, records a killed daemon left ``running`` are
marked ``failed`` (``Interrupted``) and whatever they left (temp file, multipart upload,
snapshot, staging folder) is removed. A restore holds the volume's containers stopped
through the ``Containers`` it is given and releases them afterwards (they return to their
desired power state). This module must not serve HTTP, touch the engine or edit desired
documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from lightd.backups import local, restore, transcode, walk
from lightd.backups.records import (
    ADAPTERS,
    INTERRUPTED,
    Adapter,
    BackupRecord,
    RecordStore,
    RestoreRecord,
    new_record,
)
from lightd.backups.restic import Restic, ResticConfig, probe_private_mount
from lightd.backups.s3 import MultipartWrite, S3Client, S3Config
from lightd.backups.scheduler import Scheduler
from lightd.config import BackupSettings
from lightd.errors import (
    Conflict,
    DiskLimitExceeded,
    InsufficientStorage,
    InvalidField,
    LightdError,
)
from lightd.fs import ArchiveLimits, VolumeManager
from lightd.fs.beneath import Root
from lightd.store import DocumentStore

log = logging.getLogger("lightd.backups")

P = ParamSpec("P")
T = TypeVar("T")
PROGRESS_INTERVAL = 1.0
STOP_WAIT_SECONDS = 10.0


class BackupRunning(Conflict):
    message = "Backup already running"


class Containers(Protocol):
    """What the service needs of the containers: who uses a volume, and a stop hold."""

    def users_of(self, volume_id: str) -> list[str]: ...
    def hold(self, internal_id: str) -> None: ...
    def release(self, internal_id: str) -> None: ...
    def running(self, internal_id: str) -> bool: ...


class NoContainers:
    def users_of(self, volume_id: str) -> list[str]:
        return []

    def hold(self, internal_id: str) -> None:
        return None

    def release(self, internal_id: str) -> None:
        return None

    def running(self, internal_id: str) -> bool:
        return False


class Throttle:
    """True at most once per ``interval`` (the clock is a parameter, for tests)."""

    def __init__(self, interval: float = PROGRESS_INTERVAL) -> None:
        self.interval = interval
        self.last = float("-inf")

    def ready(self, now: float) -> bool:
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


@dataclass
class Listeners:
    """Where changes go: ``/watch``, the container's sockets, the panel."""

    changed: list[Callable[[str, dict[str, Any] | None], None]] = field(default_factory=list)
    message: list[Callable[[str, str], None]] = field(default_factory=list)
    finished: list[Callable[[BackupRecord, str], None]] = field(default_factory=list)


class BackupMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.runs = Counter(
            "lightd_backup_runs",
            "Backups and restores by operation, adapter and outcome",
            ["operation", "adapter", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "lightd_backup_duration_seconds",
            "Backup and restore durations by operation and adapter",
            ["operation", "adapter"],
            registry=registry,
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600),
        )
        self.bytes = Counter(
            "lightd_backup_bytes",
            "Bytes read from volumes (backups) or written to them (restores)",
            ["operation", "adapter"],
            registry=registry,
        )

    def observe(
        self, operation: str, adapter: str, outcome: str, seconds: float, size: int
    ) -> None:
        self.runs.labels(operation=operation, adapter=adapter, outcome=outcome).inc()
        self.seconds.labels(operation=operation, adapter=adapter).observe(seconds)
        self.bytes.labels(operation=operation, adapter=adapter).inc(size)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, LightdError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class BackupService:
    def __init__(
        self,
        settings: BackupSettings,
        *,
        data_dir: Path,
        data: DocumentStore,
        volumes: VolumeManager,
        containers: Containers | None = None,
        registry: CollectorRegistry | None = None,
        extract_ratio: float = 200.0,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.volumes = volumes
        # volume id -> the uid, gid of its container's user: a restore is handed to it.
        self.owner_of: Callable[[str], tuple[int, int] | None] = lambda _volume_id: None
        self.containers: Containers = containers or NoContainers()
        self.records = RecordStore(data)
        self.local = local.LocalStore(settings.local_dir or data_dir / "backups")
        self.listeners = Listeners()
        self.metrics = BackupMetrics(registry)
        self.limits = ArchiveLimits(
            max_total_bytes=settings.restore_max_total_bytes,
            max_entries=settings.restore_max_entries,
            max_ratio=extract_ratio,
        )
        self.restic = Restic(self._restic_config())
        self.restic_version: str | None = None
        # restic reads the files itself through a private nosymfollow mount (root only);
        # otherwise it is fed lightd's tar stream.
        self.restic_tree = False
        self._pool = ThreadPoolExecutor(settings.concurrency + 2, thread_name_prefix="lightd-bk")
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._busy: dict[str, str] = {}  # volume id -> backup id (the per-volume lock)
        self._meters: dict[str, walk.Meter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: dict[str, asyncio.Event] = {}
        self.scheduler: Scheduler | None = None
        # backup id -> which files a truncating restore a killed daemon left now holds
        self._recovered: dict[str, str] | None = None

    # -- configuration ------------------------------------------------------------------

    def _s3_config(self) -> S3Config:
        s3 = self.settings.s3
        if not (s3.endpoint and s3.bucket):
            raise InvalidField("adapter", "the s3 adapter needs backups.s3.endpoint and bucket")
        return S3Config(
            endpoint=s3.endpoint,
            region=s3.region,
            bucket=s3.bucket,
            prefix=s3.prefix,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            part_size=s3.part_size_mib * 1024 * 1024,
            retries=s3.retries,
            retry_initial_seconds=s3.retry_initial_seconds,
            retry_max_seconds=s3.retry_max_seconds,
            timeout_seconds=s3.timeout_seconds,
        )

    def _restic_config(self) -> ResticConfig:
        section = self.settings.restic
        env: dict[str, str] = {}
        if section.repository.startswith("s3:"):
            env = {
                "AWS_ACCESS_KEY_ID": self.settings.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": self.settings.s3.secret_key,
                "AWS_DEFAULT_REGION": self.settings.s3.region,
            }
        return ResticConfig(
            binary=section.binary,
            repository=section.repository or str(self.local.folder / "restic"),
            password_file=self.data_dir / "restic-password",
            env=env,
            lock_retries=section.lock_retries,
        )

    # -- lifecycle --------------------------------------------------------------------

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        unfinished = await self._run(self.records.load)
        await self._run(self.local.sweep)
        await self._run(restore.sweep_staging, self.volumes.root)
        if self._recovered is None:
            await self.recover()
        self.restic_version = await self._run(self.restic.version)
        if self.restic_version is not None:
            self.restic_tree = await self._run(probe_private_mount, self.data_dir / "restic-mnt")
        for record in unfinished:
            self._interrupted(record)
        if unfinished:
            log.warning("%d backups or restores were interrupted", len(unfinished))
            self._spawn(self._clean_interrupted(unfinished))
        if self.scheduler is not None:
            self.scheduler.start()

    async def recover(self) -> None:
        """Finish the swaps of truncating restores a killed daemon left (the old or the
        new files, whole). The daemon calls it at start before the volumes' temp sweep
        and before any container starts; :meth:`start` does if it was not."""
        self._recovered = {}
        for ref in await self._run(self.volumes.refs):
            try:
                found = await self._run(restore.recover, ref.path)
            except (OSError, LightdError) as exc:
                log.error("volume %s: a restore left by a killed daemon: %s", ref.id, exc)
                continue
            for item in found:
                log.warning(
                    "volume %s: the interrupted restore of %s left the %s files",
                    ref.id, item.token, item.outcome,
                )  # fmt: skip
                self._recovered[item.token] = item.outcome

    def _interrupted(self, record: BackupRecord) -> None:
        now = time.time()
        if record.state == "running":
            record.state, record.error, record.completed_at = "failed", INTERRUPTED, now
        if record.restore is not None and record.restore.state == "running":
            if (self._recovered or {}).get(record.backup_id) == "new":
                record.restore.state = "done"  # its swap was past the point of no return
            else:
                record.restore.state = "failed"
                record.restore.error = INTERRUPTED
            record.restore.completed_at = now
        self.records.save(record)

    async def _clean_interrupted(self, records: list[BackupRecord]) -> None:
        for record in records:
            if record.error != INTERRUPTED:
                continue
            try:
                await self._run(self._remove_stored, record)
            except LightdError as exc:
                log.warning("backup %s: cleaning what it left failed: %s", record.backup_id, exc)

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        for meter in self._meters.values():
            meter.cancelled.set()
        tasks = list(self._tasks)
        for task in tasks:
            if task.get_name().startswith("backup-clean"):
                task.cancel()
        if tasks:
            # Backups stop at their next write; an extraction runs to its end. What is
            # still running after this is found at the next start (Interrupted).
            await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, work: Any, name: str = "backup-clean") -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- notifications ------------------------------------------------------------------

    def _changed(self, record: BackupRecord, *, deleted: bool = False) -> None:
        view = None if deleted else record.view()
        for listener in self.listeners.changed:
            with contextlib.suppress(Exception):
                listener(record.backup_id, view)

    def _message(self, volume_id: str, text: str) -> None:
        for key in self.containers.users_of(volume_id):
            for listener in self.listeners.message:
                with contextlib.suppress(Exception):
                    listener(key, text)

    def _finished(self, record: BackupRecord, operation: str) -> None:
        for listener in self.listeners.finished:
            with contextlib.suppress(Exception):
                listener(record, operation)

    def _meter(self, record: BackupRecord, progress: Callable[[], Any]) -> walk.Meter:
        loop = self._loop
        throttle = Throttle()
        meter = walk.Meter(limit_bytes_s=self.settings.write_limit_mib_s * 1024 * 1024)

        def tick() -> None:
            if throttle.ready(time.monotonic()) and loop is not None:
                loop.call_soon_threadsafe(self._progress, record, meter, progress)

        meter.on_progress = tick
        return meter

    def _progress(self, record: BackupRecord, meter: walk.Meter, target: Callable[[], Any]) -> None:
        progress = target()
        if progress is None:
            return
        # The total is measured before the walk; what it reads can outgrow it (tar framing).
        progress.bytes_done = meter.bytes_done
        progress.bytes_total = max(meter.bytes_total, meter.bytes_done)
        self._changed(record)

    # -- queries ------------------------------------------------------------------------

    def volume_id(self, ref: str) -> str:
        return self.volumes.resolve(ref).id

    def of_volume(self, volume_ref: str) -> list[BackupRecord]:
        return self.records.of_volume(self.volume_id(volume_ref))

    def get(self, volume_ref: str, ref: str) -> BackupRecord:
        return self.records.resolve(self.volume_id(volume_ref), ref)

    def busy(self, volume_id: str) -> bool:
        return volume_id in self._busy

    # -- backups ------------------------------------------------------------------------

    async def create(
        self,
        volume_ref: str,
        *,
        adapter: str | None = None,
        name: str | None = None,
        ignore: list[str] | None = None,
        scheduled_for: str | None = None,
    ) -> BackupRecord:
        """Start a backup; answers at once with its ``running`` record."""
        volume_id = self.volume_id(volume_ref)
        chosen = adapter or self.settings.default_adapter
        if chosen not in ADAPTERS:
            raise InvalidField("adapter", f"must be one of {', '.join(ADAPTERS)}")
        if chosen == "s3":
            self._s3_config()
        if volume_id in self._busy:
            raise BackupRunning()
        record = new_record(
            volume_id,
            adapter=chosen,
            name=name,
            ignore=list(ignore or []),
            scheduled_for=scheduled_for,
        )
        if chosen != "restic":
            record.format = "tar.zst" if self.settings.archive_format == "zst" else "tar.gz"
        self._busy[volume_id] = record.backup_id
        try:
            await self._run(self.records.save, record)
        except BaseException:
            self._busy.pop(volume_id, None)
            raise
        self._changed(record)
        self._ended[record.backup_id] = asyncio.Event()
        self._spawn(self._backup(record), name=f"backup-{record.backup_id}")
        return record

    async def _save_final(self, record: BackupRecord) -> None:
        """Write the ended record (in a thread; at shutdown, when the pool is gone, here)."""
        try:
            await asyncio.shield(self._run(self.records.save, record))
        except RuntimeError:
            with contextlib.suppress(LightdError):
                self.records.save(record)
        except (LightdError, asyncio.CancelledError):
            log.warning("backup %s: its record could not be written", record.backup_id)

    async def finished(self, backup_id: str) -> None:
        """Until the backup (or the restore) of ``backup_id`` that runs has ended."""
        event = self._ended.get(backup_id)
        if event is not None:
            await event.wait()

    async def _backup(self, record: BackupRecord) -> None:
        started = time.monotonic()
        meter = self._meter(record, lambda: record.progress if record.state == "running" else None)
        self._meters[record.backup_id] = meter
        outcome = "failed"
        try:
            async with self._slots:
                self._message(record.volume_id, f"Backup {record.backup_id} started")
                await self._run(self._backup_work, record, meter)
            record.state = "done"
            outcome = "done"
        except asyncio.CancelledError:
            record.state, record.error = "failed", "Cancelled"
            raise
        except BaseException as exc:
            record.state, record.error = "failed", _error_text(exc)
            if not isinstance(exc, LightdError):
                log.exception("backup %s failed", record.backup_id)
            else:
                log.warning("backup %s failed: %s", record.backup_id, record.error)
        finally:
            self._meters.pop(record.backup_id, None)
            record.completed_at = time.time()
            record.progress.bytes_done = meter.bytes_done
            record.progress.bytes_total = max(meter.bytes_total, meter.bytes_done)
            record.files = meter.files
            # Readers see the final state from here on, so the volume is free from here on
            # too (a panel that sees "done" may start the next backup at once).
            self._busy.pop(record.volume_id, None)
            await self._save_final(record)
            self._ended.pop(record.backup_id, asyncio.Event()).set()
            self._changed(record)
            self._message(record.volume_id, f"Backup {record.backup_id} {record.state}")
            self._finished(record, "backup")
            self.metrics.observe(
                "backup", record.adapter, outcome, time.monotonic() - started, meter.bytes_done
            )

    def _write(
        self, root: Root, spec: Any, sink: walk.Sink, meter: walk.Meter, record: BackupRecord
    ) -> walk.Written:
        if record.stored_format == "tar.zst":
            return walk.write_archive(
                root, spec, sink, meter, codec="zst", level=self.settings.zstd_level
            )
        return walk.write_archive(
            root, spec, sink, meter, codec="gz", level=self.settings.compression_level
        )

    def _backup_work(self, record: BackupRecord, meter: walk.Meter) -> None:
        suffix = f".{record.stored_format}"
        with self.volumes.open(record.volume_id) as root:
            spec = walk.ignore_spec(root, record.ignore)
            meter.bytes_total, _entries = walk.measure(root, spec)
            if record.adapter == "archive":
                target = self.local.begin(record.backup_id, suffix)
                try:
                    written = self._write(root, spec, target.write, meter, record)
                    record.location = target.publish()
                except BaseException:
                    target.discard()
                    raise
                record.size, record.checksum = written.size, written.checksum
            elif record.adapter == "s3":
                client = S3Client(self._s3_config())
                try:
                    key = client.key_for(f"{record.volume_id}/{record.backup_id}{suffix}")

                    def remember(upload_id: str) -> None:
                        record.upload_id, record.location = upload_id, key
                        self.records.save(record)

                    upload = MultipartWrite(client, key, remember)
                    try:
                        written = self._write(root, spec, upload.write, meter, record)
                        upload.publish()
                    except BaseException:
                        upload.discard()
                        raise
                finally:
                    client.close()
                record.size, record.checksum = written.size, written.checksum
                record.upload_id = None
            elif self.restic_tree and (found := walk.tree_paths(root, spec))[0]:
                # (restic refuses an empty snapshot: an empty volume goes as a tar stream)
                paths, meter.bytes_total, entries = found

                def progress(done: int, total: int) -> None:
                    meter.bytes_done = done
                    if meter.on_progress is not None:
                        meter.on_progress()

                summary = self.restic.backup_tree(
                    record.backup_id,
                    volume=root.path,
                    mountpoint=self.data_dir / "restic-mnt" / record.volume_id,
                    paths=paths,
                    parent=self._restic_parent(record.volume_id),
                    progress=progress,
                    cancelled=meter.cancelled,
                    limit_kib_s=int(self.settings.write_limit_mib_s * 1024),
                )
                meter.files = entries
                meter.bytes_done = max(meter.bytes_done, summary.total_bytes_processed)
                record.restic_mode = "tree"
                record.location = summary.snapshot_id
                record.size = summary.total_bytes_processed
                record.data_added = summary.data_added
            else:
                summary = self.restic.backup(
                    record.backup_id,
                    f"{record.volume_id}.tar",
                    lambda write: walk.write_tar(root, spec, write, meter),
                )
                record.restic_mode = "stream"
                record.location = summary.snapshot_id
                record.size = summary.total_bytes_processed
                record.data_added = summary.data_added

    def _restic_parent(self, volume_id: str) -> str | None:
        """The snapshot of the volume's latest restic backup (restic skips what it has)."""
        for record in self.records.of_volume(volume_id):
            if (
                record.adapter == "restic"
                and record.state == "done"
                and record.restic_mode == "tree"
            ):
                return record.location
        return None

    # -- reading back -------------------------------------------------------------------

    def _source(self, record: BackupRecord) -> Iterator[bytes]:
        """The backup's archive bytes (tar.gz, or plain tar for restic)."""
        if record.location is None:
            raise LightdError("Backup has no stored data")
        if record.adapter == "archive":
            return self.local.read(record.location)
        if record.adapter == "s3":
            client = S3Client(self._s3_config())

            def read() -> Iterator[bytes]:
                try:
                    yield from client.read(record.location or "")
                finally:
                    client.close()

            return read()
        if record.restic_mode == "tree":
            return self.restic.dump(record.location, "")
        return self.restic.dump(record.location, f"{record.volume_id}.tar")

    def download(self, volume_ref: str, ref: str) -> tuple[BackupRecord, Iterator[bytes]]:
        """The backup as a tar.gz stream (a blocking iterator: read it from a thread)."""
        record = self.get(volume_ref, ref)
        if record.state != "done":
            raise (
                BackupRunning()
                if record.state == "running"
                else Conflict("Backup failed; nothing to download")
            )
        source = self._source(record)
        if record.stored_format == "tar.gz":
            return record, source
        if record.stored_format == "tar.zst":  # transcoded on the fly: tar.zst -> tar
            # (no limit: a download writes nothing here; the reader decides what it takes)
            source = transcode.zst_decoded(source, limit=sys.maxsize)
        return record, transcode.gzipped(source, level=self.settings.compression_level)

    def _decoded_limit(self, record: BackupRecord) -> int:
        """The most a backup's decoded tar may hold: what the extractor would take from
        an archive of its size (its total and ratio limits), plus the headers and padding
        of its entries. The whole tar is decoded before extraction starts, so a zstd bomb
        (a tampered backup) is stopped here, not by the extractor."""
        content = min(self.limits.max_total_bytes, int(self.limits.max_ratio * record.size))
        return content + 3072 * (record.files + 16) + 1024 * 1024

    async def open_download(
        self, volume_ref: str, ref: str
    ) -> tuple[BackupRecord, AsyncIterator[bytes]]:
        """:meth:`download` read from threads; the first chunk is read before this returns,
        so a store that fails does so while an error can still be answered."""
        record, chunks = await asyncio.to_thread(self.download, volume_ref, ref)
        first = await asyncio.to_thread(next, chunks, b"")

        async def body() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                while chunk := await asyncio.to_thread(next, chunks, b""):
                    yield chunk
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    await asyncio.to_thread(close)

        return record, body()

    # -- deleting -----------------------------------------------------------------------

    def _remove_stored(self, record: BackupRecord) -> None:
        if record.adapter == "archive":
            self.local.delete(record.location, record.backup_id)
        elif record.adapter == "s3":
            client = S3Client(self._s3_config())
            try:
                key = record.location or client.key_for(
                    f"{record.volume_id}/{record.backup_id}.{record.stored_format}"
                )
                if record.upload_id:
                    with contextlib.suppress(LightdError):
                        client.abort(key, record.upload_id)
                client.delete(key)
            finally:
                client.close()
        else:
            self.restic.unlock()
            self.restic.forget_tagged(record.backup_id)

    async def delete(self, volume_ref: str, ref: str) -> BackupRecord:
        record = self.get(volume_ref, ref)
        if record.state == "running" or self._busy.get(record.volume_id) == record.backup_id:
            raise BackupRunning()
        try:
            await self._run(self._remove_stored, record)
        except LightdError as exc:
            if record.state == "done":
                raise
            # A failed backup stored nothing usable; its store may be what failed.
            log.warning("backup %s: cleaning its store failed: %s", record.backup_id, exc)
        await self._run(self.records.remove, record.backup_id)
        self._changed(record, deleted=True)
        return record

    # -- restores -----------------------------------------------------------------------

    async def restore(self, volume_ref: str, ref: str, *, truncate: bool) -> BackupRecord:
        record = self.get(volume_ref, ref)
        ending = self._ended.get(record.backup_id)
        if (
            ending is not None
            and record.state == "done"
            and self._busy.get(record.volume_id) != record.backup_id
        ):
            # Its last restore has ended but its record is still being written: one write
            # of this record at a time.
            await ending.wait()
        if record.state != "done":
            raise (
                BackupRunning()
                if record.state == "running"
                else InvalidField("backup_id", "the backup failed and cannot be restored")
            )
        if record.volume_id in self._busy:
            raise BackupRunning()
        self._busy[record.volume_id] = record.backup_id
        record.restore = RestoreRecord(truncate=truncate, started_at=time.time())
        try:
            await self._run(self.records.save, record)
        except BaseException:
            self._busy.pop(record.volume_id, None)
            raise
        self._changed(record)
        self._ended[record.backup_id] = asyncio.Event()
        self._spawn(self._restore(record), name=f"restore-{record.backup_id}")
        return record

    async def _stop_users(self, volume_id: str) -> list[str]:
        held = self.containers.users_of(volume_id)
        for key in held:
            self.containers.hold(key)
        deadline = time.monotonic() + self.settings.stop_timeout_seconds
        while any(self.containers.running(key) for key in held):
            if time.monotonic() > deadline:
                raise LightdError("Restore failed: the volume's container did not stop")
            await asyncio.sleep(0.1)
        return held

    async def _restore(self, record: BackupRecord) -> None:
        assert record.restore is not None
        state = record.restore
        started = time.monotonic()
        meter = self._meter(record, lambda: state.progress if state.state == "running" else None)
        meter.bytes_total = record.size
        self._meters[f"restore-{record.backup_id}"] = meter
        held: list[str] = []
        outcome = "failed"
        try:
            async with self._slots:
                self._message(record.volume_id, f"Restore of backup {record.backup_id} started")
                held = await self._stop_users(record.volume_id)
                path = self.volumes.resolve(record.volume_id).path
                await self._run(self._restore_work, record, path, meter)
            state.state = "done"
            outcome = "done"

        except asyncio.CancelledError:
            state.state, state.error = "failed", "Cancelled"
            raise
        except BaseException as exc:
            state.state, state.error = "failed", _error_text(exc)
            log.warning("restore of %s failed: %s", record.backup_id, state.error)
        finally:
            for key in held:
                self.containers.release(key)
            self._meters.pop(f"restore-{record.backup_id}", None)
            state.completed_at = time.time()
            state.progress.bytes_done = meter.bytes_done
            state.progress.bytes_total = max(meter.bytes_total, meter.bytes_done)
            self._busy.pop(record.volume_id, None)  # as for backups: free once it reads ended
            await self._save_final(record)
            self._ended.pop(record.backup_id, asyncio.Event()).set()
            self._changed(record)
            self._message(record.volume_id, f"Restore of backup {record.backup_id} {state.state}")
            self._finished(record, "restore")
            self.metrics.observe(
                "restore", record.adapter, outcome, time.monotonic() - started, meter.bytes_done
            )

    def _restore_work(self, record: BackupRecord, path: Path, meter: walk.Meter) -> None:
        assert record.restore is not None
        link = None
        if record.adapter == "archive" and record.location:
            link = self.local.path(record.location)
        # The disk limit holds for restores too (checked as the archive expands, so a
        # restore past it fails with "Disk limit exceeded" and the old tree stays). With
        # truncate the old tree stays beside the staged one until the swap, and every
        # backend counts both (the kernel's; the soft accountant hears the staged tree
        # through the tally): so the restored tree must fit in the room left.
        volume = self.volumes.resolve(record.volume_id)
        disk = self.volumes.disk
        limit = disk.limit(volume.id)
        kernel = limit is not None and disk.backend.measures(volume.ref)
        room = disk.room(volume.ref)
        decode = None
        if record.stored_format == "tar.zst":
            decode = functools.partial(transcode.zst_decoded, limit=self._decoded_limit(record))
        try:
            restore.restore(
                path,
                self._source(record),
                decode=decode,
                truncate=record.restore.truncate,
                limits=dataclasses.replace(self.limits, disk_room=room),
                meter=meter,
                token=record.backup_id,
                link=link,
                owner=self.owner_of(record.volume_id),
                tally=disk.tally(volume.id),
            )
        except InsufficientStorage as exc:
            if kernel and not isinstance(exc, DiskLimitExceeded):
                raise DiskLimitExceeded() from exc  # the kernel said so, at the limit
            raise

    # -- transfers (lightd.transfer) -----------------------------------------------------

    def travelling(self, volume_id: str) -> list[BackupRecord]:
        """The volume's finished backups, for a transfer to take along; 409 while one runs."""
        if volume_id in self._busy:
            raise BackupRunning()
        return [r for r in self.records.of_volume(volume_id) if r.state == "done"]

    def archive_file(self, record: BackupRecord) -> Path:
        """Where an ``archive`` backup's file is in the local store."""
        return self.local.path(record.location or "")

    def s3_store(self) -> str | None:
        """Which S3 store ``s3`` backups go to (endpoint, bucket, prefix); None: none."""
        s3 = self.settings.s3
        if not (s3.endpoint and s3.bucket):
            return None
        return f"{s3.endpoint.rstrip('/')}/{s3.bucket}/{s3.prefix.strip('/')}"

    async def take_in(self, records: list[BackupRecord], files: dict[str, Path]) -> None:
        """Register backups a transfer brought; ``files`` (same file system, moved in)
        holds the archive of each ``archive`` backup. 409 if an id is taken here."""
        taken = [r.backup_id for r in records if self.records.get(r.backup_id) is not None]
        if taken:
            raise Conflict(f"Backup {taken[0]} already exists on this node")

        def work() -> None:
            for record in records:
                staged = files.get(record.backup_id)
                if staged is not None:
                    final = self.local.path(record.location or "")
                    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    if final.exists():
                        raise Conflict(f"Backup {record.backup_id} already exists on this node")
                    staged.rename(final)
                self.records.save(record)

        await self._run(work)
        for record in records:
            self._changed(record)

    async def let_go(self, backup_ids: list[str], *, remove_archives: bool) -> None:
        """Forget backups that now live on another node: their records and, if asked, the
        local archive files (never an S3 object or a restic snapshot: the other node's)."""

        def work() -> list[BackupRecord]:
            gone = []
            for backup_id in backup_ids:
                record = self.records.get(backup_id)
                if record is None:
                    continue
                if remove_archives and record.adapter == "archive":
                    self.local.delete(record.location, record.backup_id)
                self.records.remove(backup_id)
                gone.append(record)
            return gone

        for record in await self._run(work):
            self._changed(record, deleted=True)

    # -- schedules ----------------------------------------------------------------------

    def scheduled(self, internal_id: str) -> list[BackupRecord]:
        return [r for r in self.records.all() if r.scheduled_for == internal_id]

    def adapters(self) -> tuple[Adapter, ...]:
        return ADAPTERS

    def available_adapters(self) -> list[Adapter]:
        """The adapters a backup can use on this node: ``archive`` always, ``s3`` once its
        endpoint and bucket are set, ``restic`` when its binary answered at start."""
        s3 = self.settings.s3
        available: list[Adapter] = ["archive"]
        if s3.endpoint and s3.bucket:
            available.append("s3")
        if self.restic_version is not None:
            available.append("restic")
        return available
