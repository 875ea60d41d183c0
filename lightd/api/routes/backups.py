"""Backup routes: start, list, show, download, restore and delete a volume's backups.

Handlers validate bodies and hand the work to :class:`lightd.backups.BackupService`,
which runs it off the event loop; downloads stream the service's blocking iterator a
chunk at a time from a thread. They must not touch a volume's files or a backup store
themselves.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from quart import Blueprint, Response
from quart_schema import validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody, RequestModel
from lightd.backups.records import BackupRecord

blueprint = Blueprint("backups", __name__)


class CreateBackupRequest(RequestModel):
    adapter: Literal["archive", "s3", "restic"] | None = None
    name: str | None = Field(default=None, max_length=255)
    ignore: list[str] = Field(default_factory=list, max_length=1024)


class RestoreRequest(RequestModel):
    truncate: bool = False


class Started(BaseModel):
    backup_id: str
    state: str


class ProgressView(BaseModel):
    bytes_done: int
    bytes_total: int


class RestoreView(BaseModel):
    state: str
    truncate: bool
    started_at: float
    completed_at: float | None
    error: str | None
    progress: ProgressView


class BackupView(BaseModel):
    backup_id: str
    volume_id: str
    name: str
    adapter: str
    state: str
    size: int
    checksum: str | None
    files: int
    created_at: float
    completed_at: float | None
    error: str | None
    progress: ProgressView
    restore: RestoreView | None = None
    scheduled_for: str | None = None
    # restic: the new (deduplicated, compressed) bytes this snapshot added.
    data_added: int | None = None
    # archive and s3: how the backup is stored, "tar.gz" or "tar.zst"; restic: None.
    format: str | None = None


class BackupList(BaseModel):
    backups: list[BackupView]


def _view(record: BackupRecord) -> BackupView:
    return BackupView.model_validate(record.view())


@blueprint.post("/volumes/<ref>/backups")
@validate_request(CreateBackupRequest)
@validate_response(Started, 202)
@validate_response(ErrorBody, 409)
async def create_backup(ref: str, data: CreateBackupRequest) -> tuple[Started, int]:
    record = await get_services().backups.create(
        ref, adapter=data.adapter, name=data.name, ignore=data.ignore
    )
    return Started(backup_id=record.backup_id, state=record.state), 202


@blueprint.get("/volumes/<ref>/backups")
@validate_response(BackupList)
async def list_backups(ref: str) -> BackupList:
    service = get_services().backups
    return BackupList(backups=[_view(r) for r in service.of_volume(ref)])


@blueprint.get("/volumes/<ref>/backups/<backup_id>")
@validate_response(BackupView)
@validate_response(ErrorBody, 404)
async def show_backup(ref: str, backup_id: str) -> BackupView:
    return _view(get_services().backups.get(ref, backup_id))


@blueprint.get("/volumes/<ref>/backups/<backup_id>/download")
async def download_backup(ref: str, backup_id: str) -> Response:
    record, body = await get_services().backups.open_download(ref, backup_id)
    response = Response(body, mimetype="application/gzip")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{record.name or record.backup_id}.tar.gz"'
    )
    return response


@blueprint.post("/volumes/<ref>/backups/<backup_id>/restore")
@validate_request(RestoreRequest)
@validate_response(Started, 202)
@validate_response(ErrorBody, 409)
async def restore_backup(ref: str, backup_id: str, data: RestoreRequest) -> tuple[Started, int]:
    record = await get_services().backups.restore(ref, backup_id, truncate=data.truncate)
    return Started(backup_id=record.backup_id, state="running"), 202


@blueprint.delete("/volumes/<ref>/backups/<backup_id>")
@validate_response(MessageBody)
@validate_response(ErrorBody, 409)
async def delete_backup(ref: str, backup_id: str) -> MessageBody:
    await get_services().backups.delete(ref, backup_id)
    return MessageBody(message="Backup deleted")
