"""Backups that travel with a transfer (``include_backups``): what goes, what is taken.

What travels is decided by the adapter that stored each finished backup of the volume:

- ``archive`` (the node's local store): the record, and the archive file itself after
  the volume's stream, framed as ``B`` (which backup, its size), ``D`` pieces and ``E``
  (its SHA-256 and size). The target writes it into staging, verifies it, and moves it
  into its own local store when the volume is published.
- ``s3``: the record only, and only when the target's S3 store (endpoint, bucket,
  prefix) is the source's, so the object stays readable there; otherwise the target
  refuses at the check pass (409), before any data moves.
- ``restic``: refused by the source when the transfer is asked for (409): a restic
  snapshot is readable only with the node's own repository password.

A running backup or restore of the volume refuses the transfer (409). This module
must not serve HTTP nor touch volumes; it reaches the backup service only through its
public methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightd.backups.records import ID_RE, BackupRecord
from lightd.backups.service import BackupService
from lightd.errors import Conflict, InvalidRequest

MAX_BACKUPS = 1000


class BackupsRefused(Conflict):
    message = "Transfer refused: these backups cannot travel"


@dataclass(frozen=True)
class Outgoing:
    """The backups a source sends: every record, and the archive file of some."""

    records: list[BackupRecord]
    s3_store: str | None

    def files(self, service: BackupService) -> list[tuple[str, Path]]:
        return [
            (r.backup_id, service.archive_file(r)) for r in self.records if r.adapter == "archive"
        ]

    def manifest(self) -> dict[str, Any]:
        return {
            "records": [r.model_dump(mode="json") for r in self.records],
            "s3_store": self.s3_store,
        }


def outgoing(service: BackupService | None, volume_id: str) -> Outgoing:
    """What the source sends of ``volume_id``'s backups; 409 for what cannot travel."""
    if service is None:
        return Outgoing([], None)
    records = service.travelling(volume_id)
    restic = [r.backup_id for r in records if r.adapter == "restic"]
    if restic:
        raise BackupsRefused(
            f"Transfer refused: restic backups do not travel ({len(restic)} of this volume, "
            f"first {restic[0]}); delete them or transfer without include_backups"
        )
    for record in records:
        if record.adapter == "archive" and not service.archive_file(record).is_file():
            raise BackupsRefused(
                f"Transfer refused: the archive of backup {record.backup_id} is missing"
            )
    return Outgoing(records, service.s3_store())


def incoming(service: BackupService | None, volume_id: str, part: object) -> list[BackupRecord]:
    """The records a target takes, checked before any data moves (400 malformed, 409
    what this node cannot hold)."""
    if part is None:
        return []
    if not isinstance(part, dict) or not isinstance(part.get("records"), list):
        raise InvalidRequest("Transfer refused: bad backups in the manifest")
    raw = part["records"]
    if len(raw) > MAX_BACKUPS:
        raise InvalidRequest("Transfer refused: too many backups")
    try:
        records = [BackupRecord.model_validate(item) for item in raw]
    except ValueError as exc:
        raise InvalidRequest(f"Transfer refused: bad backup record ({exc})") from None
    if not records:
        return []
    if service is None:
        raise BackupsRefused("Transfer refused: this node has no backup service")
    ids = [r.backup_id for r in records]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("Transfer refused: a backup is listed twice")
    for record in records:
        if not ID_RE.fullmatch(record.backup_id) or record.volume_id != volume_id:
            raise InvalidRequest(f"Transfer refused: backup {record.backup_id} is not the volume's")
        if record.state != "done" or record.adapter == "restic":
            raise BackupsRefused(f"Transfer refused: backup {record.backup_id} cannot travel")
        if record.adapter == "archive":
            location = record.location or ""
            if not location or "/" in location or location.startswith("."):
                raise InvalidRequest(f"Transfer refused: backup {record.backup_id} has a bad name")
        if record.adapter == "s3" and part.get("s3_store") != service.s3_store():
            raise BackupsRefused(
                "Transfer refused: s3 backups travel only to a node configured with the same "
                "S3 endpoint, bucket and prefix"
            )
        if service.records.get(record.backup_id) is not None:
            raise BackupsRefused(f"Backup {record.backup_id} already exists on this node")
        record.restore = None
        record.upload_id = None
    return records
