"""Backup records: what was asked, what ran and how it ended, kept as observed state.

One JSON document per backup under ``<data_dir>/state/backups/<backup_id>.json``,
written on every change of state (never for progress, which lives in memory). A record
is the truth about a backup: a backup whose record is not ``done`` is never offered for
download or restore. This module must not touch volumes, stores or the network.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lightd.errors import InvalidField, InvalidRequest, NotFound
from lightd.store import DocumentStore

State = Literal["running", "done", "failed"]
Adapter = Literal["archive", "s3", "restic"]
ArchiveFormat = Literal["tar.gz", "tar.zst"]
ADAPTERS: tuple[Adapter, ...] = ("archive", "s3", "restic")
FOLDER = "state/backups"
ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REF_RE = re.compile(r"^[0-9a-f][0-9a-f-]{7,35}$")
INTERRUPTED = "Interrupted"


class BackupNotFound(NotFound):
    message = "Backup not found"


class Progress(BaseModel):
    bytes_done: int = 0
    bytes_total: int = 0


class RestoreRecord(BaseModel):
    state: State = "running"
    truncate: bool = False
    started_at: float = 0.0
    completed_at: float | None = None
    error: str | None = None
    progress: Progress = Field(default_factory=Progress)


class BackupRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    backup_id: str
    volume_id: str
    name: str
    adapter: Adapter
    state: State = "running"
    size: int = 0
    checksum: str | None = None
    files: int = 0
    created_at: float
    completed_at: float | None = None
    error: str | None = None
    progress: Progress = Field(default_factory=Progress)
    ignore: list[str] = Field(default_factory=list)
    # Where the adapter put it: a file name, an object key or a restic snapshot id.
    location: str | None = None
    # An S3 multipart upload in flight (aborted if lightd dies before it completes).
    upload_id: str | None = None
    # The container whose schedule made it (pruned by its keep rules); None: manual.
    scheduled_for: str | None = None
    data_added: int | None = None
    # restic: "tree" (files read through a nosymfollow mount) or "stream" (a tar on stdin).
    restic_mode: Literal["tree", "stream"] | None = None
    # archive and s3: how it is stored ("tar.gz" or "tar.zst"); restic: None (a
    # snapshot). Records older than the setting have none: tar.gz.
    format: ArchiveFormat | None = None
    restore: RestoreRecord | None = None

    @property
    def stored_format(self) -> ArchiveFormat | None:
        if self.adapter == "restic":
            return None
        return self.format or "tar.gz"

    def view(self) -> dict[str, Any]:
        """The API's shape of a backup."""
        return self.model_dump(
            include={
                "backup_id",
                "volume_id",
                "name",
                "adapter",
                "state",
                "size",
                "checksum",
                "files",
                "created_at",
                "completed_at",
                "error",
                "progress",
                "restore",
                "scheduled_for",
                "data_added",
            }
        ) | {"format": self.stored_format}


def new_record(
    volume_id: str,
    *,
    adapter: Adapter,
    name: str | None,
    ignore: list[str],
    scheduled_for: str | None = None,
    now: float | None = None,
) -> BackupRecord:
    stamp = time.time() if now is None else now
    backup_id = str(uuid.uuid4())
    return BackupRecord(
        backup_id=backup_id,
        volume_id=volume_id,
        name=name or time.strftime("backup-%Y%m%d-%H%M%S", time.gmtime(stamp)),
        adapter=adapter,
        created_at=stamp,
        ignore=ignore,
        scheduled_for=scheduled_for,
    )


class RecordStore:
    """Records in memory, mirrored to their documents (blocking: call from a thread)."""

    def __init__(self, data: DocumentStore) -> None:
        self.data = data
        self._records: dict[str, BackupRecord] = {}

    def load(self) -> list[BackupRecord]:
        """Read every record; those a killed daemon left ``running`` are returned."""
        unfinished = []
        for name in self.data.names(FOLDER):
            raw = self.data.read(name)
            try:
                record = BackupRecord.model_validate(raw)
            except ValueError:
                continue
            self._records[record.backup_id] = record
            restoring = record.restore is not None and record.restore.state == "running"
            if record.state == "running" or restoring:
                unfinished.append(record)
        return unfinished

    def save(self, record: BackupRecord) -> None:
        self._records[record.backup_id] = record
        self.data.write(f"{FOLDER}/{record.backup_id}.json", record.model_dump(mode="json"))

    def remove(self, backup_id: str) -> None:
        self._records.pop(backup_id, None)
        self.data.delete(f"{FOLDER}/{backup_id}.json")

    def get(self, backup_id: str) -> BackupRecord | None:
        return self._records.get(backup_id)

    def all(self) -> list[BackupRecord]:
        return list(self._records.values())

    def of_volume(self, volume_id: str) -> list[BackupRecord]:
        """The volume's backups, newest first."""
        found = [r for r in self._records.values() if r.volume_id == volume_id]
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found

    def resolve(self, volume_id: str, ref: str) -> BackupRecord:
        """The volume's backup named by a UUID or a unique prefix of 8+ characters."""
        ref = ref.lower()
        if not REF_RE.fullmatch(ref):
            raise InvalidField(
                "backup_id", "must be a backup UUID or a unique prefix of at least 8 characters"
            )
        matches = [r for r in self.of_volume(volume_id) if r.backup_id.startswith(ref)]
        if not matches:
            raise BackupNotFound()
        if len(matches) > 1:
            raise InvalidRequest(f"Ambiguous backup id: {ref} matches {len(matches)} backups")
        return matches[0]
