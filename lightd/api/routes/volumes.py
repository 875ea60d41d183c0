"""Volume routes: the contract's create, files, folders, copy, listing, compress and
decompress, plus list/show/delete volumes, read, upload, delete, move and chmod.

Handlers validate bodies and query strings, parse every path with
:func:`lightd.fs.paths.parse_path`, and run the blocking file work in threads through
the :class:`~lightd.fs.VolumeManager` (long work in its own pool), so the event loop keeps
answering. They must not touch a volume's files themselves: every file access goes
through :mod:`lightd.fs`, which never follows a symlink.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mimetypes
import os
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, g, request
from quart_schema import validate_querystring, validate_request, validate_response

from lightd.api.context import get_daemon
from lightd.api.routes.common import ErrorBody, MessageBody, RequestModel
from lightd.errors import InvalidField, InvalidRequest, PayloadTooLarge
from lightd.fs import VolumeInfo, ops
from lightd.fs.archive import ArchiveFormat, compress, extract
from lightd.fs.beneath import Root
from lightd.fs.paths import Parts, display, parse_path

blueprint = Blueprint("volumes", __name__)

UPLOAD_CHUNK = 1024 * 1024
DRAIN_LIMIT = 1024 * 1024


# -- models ----------------------------------------------------------------------------


class CreatedVolume(BaseModel):
    volume_id: str
    path: str


class VolumeView(BaseModel):
    volume_id: str
    path: str
    size: int
    created_at: int


class VolumeList(BaseModel):
    volumes: list[VolumeView]


class PathQuery(RequestModel):
    path: str | None = None


class WriteFileRequest(RequestModel):
    path: str
    content: str
    encoding: Literal["utf-8", "base64"] = "utf-8"


class PathRequest(RequestModel):
    path: str


class PathMessage(BaseModel):
    message: str
    path: str


class CopyRequest(RequestModel):
    source: str
    destination: str
    overwrite: bool = False


class CopyResponse(BaseModel):
    message: str
    source: str
    destination: str


class MoveRequest(RequestModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    overwrite: bool = False


class MoveResponse(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)

    message: str
    source: str = Field(alias="from")
    target: str = Field(alias="to")


class ChmodRequest(RequestModel):
    path: str
    mode: str = Field(pattern=r"^[0-7]{3,4}$", description="octal, e.g. 755 or 0644")


class ChmodResponse(BaseModel):
    message: str
    path: str
    mode: str


class FileEntry(BaseModel):
    name: str
    type: Literal["file", "directory", "symlink"]
    size: int
    mode: str
    modified_at: int


class FileList(BaseModel):
    files: list[FileEntry]


class CompressRequest(RequestModel):
    format: ArchiveFormat = "tar.gz"
    output_name: str = Field(min_length=1)
    paths: list[str] | None = None
    overwrite: bool = False


class CompressResponse(BaseModel):
    message: str
    archive_path: str
    size: int


class DecompressRequest(RequestModel):
    archive_path: str = Field(min_length=1)
    destination: str = ""
    overwrite: bool = False


class SkippedEntry(BaseModel):
    name: str
    reason: str


class DecompressResponse(BaseModel):
    message: str
    destination: str
    skipped: list[SkippedEntry]


# -- helpers ---------------------------------------------------------------------------


def _view(info: VolumeInfo) -> VolumeView:
    return VolumeView(
        volume_id=info.id, path=str(info.path), size=info.size, created_at=info.created_at
    )


def _required(query: PathQuery) -> Parts:
    if query.path is None:
        raise InvalidRequest("Missing field 'path'")
    return parse_path(query.path)


def _decode(data: WriteFileRequest) -> bytes:
    if data.encoding == "utf-8":
        return data.content.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(data.content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField("content", "not valid base64") from exc


# -- volumes ---------------------------------------------------------------------------


@blueprint.post("/volumes")
@validate_response(CreatedVolume, 201)
async def create_volume() -> tuple[CreatedVolume, int]:
    volumes = get_daemon().volumes
    volume = await volumes.run(volumes.create)
    return CreatedVolume(volume_id=volume.id, path=str(volume.path)), 201


@blueprint.get("/volumes")
@validate_response(VolumeList)
async def list_volumes() -> VolumeList:
    volumes = get_daemon().volumes
    found = await volumes.run(volumes.list)
    return VolumeList(volumes=[_view(info) for info in found])


@blueprint.get("/volumes/<ref>")
@validate_response(VolumeView)
@validate_response(ErrorBody, 404)
async def show_volume(ref: str) -> VolumeView:
    volumes = get_daemon().volumes
    volume = volumes.resolve(ref)
    return _view(await volumes.run(volumes.info, volume))


@blueprint.delete("/volumes/<ref>")
@validate_response(MessageBody)
@validate_response(ErrorBody, 409)
async def delete_volume(ref: str) -> MessageBody:
    volumes = get_daemon().volumes
    await volumes.run_heavy(volumes.delete, ref)
    return MessageBody(message="Volume deleted successfully")


# -- files -----------------------------------------------------------------------------


@blueprint.post("/volumes/<ref>/files")
@validate_request(WriteFileRequest)
@validate_response(PathMessage)
async def write_file(ref: str, data: WriteFileRequest) -> PathMessage:
    parts = parse_path(data.path)
    content = _decode(data)
    volumes = get_daemon().volumes

    def work() -> None:
        with volumes.open(ref) as root:
            ops.write_file(root, parts, content)

    await volumes.run(work)
    return PathMessage(message="File written successfully", path=display(parts))


@blueprint.get("/volumes/<ref>/files")
@validate_querystring(PathQuery)
@validate_response(FileList)
async def list_files(ref: str, query_args: PathQuery) -> FileList:
    parts = parse_path(query_args.path or "")
    volumes = get_daemon().volumes

    def work() -> list[ops.Entry]:
        with volumes.open(ref) as root:
            return ops.list_dir(root, parts)

    entries = await volumes.run(work)
    return FileList(
        files=[
            FileEntry(name=e.name, type=e.type, size=e.size, mode=e.mode, modified_at=e.modified_at)
            for e in entries
        ]
    )


@blueprint.delete("/volumes/<ref>/files")
@validate_querystring(PathQuery)
@validate_response(PathMessage)
async def delete_file(ref: str, query_args: PathQuery) -> PathMessage:
    parts = _required(query_args)
    volumes = get_daemon().volumes

    def work() -> None:
        with volumes.open(ref) as root:
            ops.delete(root, parts)

    await volumes.run_heavy(work)
    return PathMessage(message="Deleted successfully", path=display(parts))


@blueprint.get("/volumes/<ref>/files/content")
@validate_querystring(PathQuery)
async def read_file(ref: str, query_args: PathQuery) -> Response:
    parts = _required(query_args)
    volumes = get_daemon().volumes

    def work() -> tuple[int, int]:
        with volumes.open(ref) as root:
            return ops.open_for_read(root, parts)

    fd, size = await volumes.run(work)
    # A file object closes the descriptor even if the body is never iterated.
    handle = os.fdopen(fd, "rb", buffering=0)

    async def body() -> AsyncIterator[bytes]:
        with handle:
            remaining = size
            while remaining > 0:
                chunk = await volumes.run(handle.read, min(ops.CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    kind = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    response = Response(body(), mimetype=kind)
    response.headers["Content-Length"] = str(size)
    return response


async def _discard_rest_of_body() -> None:
    """Read what is left of a refused upload so the connection can serve the next request.

    Past :data:`DRAIN_LIMIT` the answer asks the client to close the connection instead:
    Hypercorn closes it anyway when a response ends before its request body.
    """
    drained = 0
    with contextlib.suppress(Exception):
        async for chunk in request.body:
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                break
        else:
            return
    g.close_connection = True


@blueprint.after_request
async def _close_if_asked(response: Response) -> Response:
    if g.get("close_connection"):
        response.headers["Connection"] = "close"
    return response


@blueprint.put("/volumes/<ref>/files/content")
@validate_querystring(PathQuery)
@validate_response(PathMessage)
async def upload_file(ref: str, query_args: PathQuery) -> PathMessage:
    body_read = False
    try:
        parts = _required(query_args)
        daemon = get_daemon()
        volumes = daemon.volumes
        limit = daemon.settings.volumes.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge()
        volume = volumes.resolve(ref)
        root = await volumes.run(Root, volume.path)
        try:
            writer = await volumes.run(ops.AtomicWriter, root, parts)
            try:
                total = 0
                pending = bytearray()
                async for chunk in request.body:
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge()
                    pending += chunk
                    if len(pending) >= UPLOAD_CHUNK:
                        await volumes.run(writer.write, bytes(pending))
                        pending.clear()
                body_read = True
                if pending:
                    await volumes.run(writer.write, bytes(pending))
                await volumes.run(writer.commit)
            except BaseException:
                await volumes.run(writer.abort)
                raise
        finally:
            root.close()
    except Exception:
        if not body_read:
            await _discard_rest_of_body()
        raise
    return PathMessage(message="File uploaded successfully", path=display(parts))


@blueprint.post("/volumes/<ref>/folders")
@validate_request(PathRequest)
@validate_response(PathMessage)
async def make_folder(ref: str, data: PathRequest) -> PathMessage:
    parts = parse_path(data.path)
    if not parts:
        raise InvalidField("path", "must name a folder below the volume root")
    volumes = get_daemon().volumes

    def work() -> None:
        with volumes.open(ref) as root:
            ops.make_folder(root, parts)

    await volumes.run(work)
    return PathMessage(message="Folder created successfully", path=display(parts))


@blueprint.post("/volumes/<ref>/copy")
@validate_request(CopyRequest)
@validate_response(CopyResponse)
async def copy(ref: str, data: CopyRequest) -> CopyResponse:
    source = parse_path(data.source, field="source")
    target = parse_path(data.destination, field="destination")
    volumes = get_daemon().volumes

    def work() -> None:
        with volumes.open(ref) as root:
            ops.copy(root, source, target, overwrite=data.overwrite)

    await volumes.run_heavy(work)
    return CopyResponse(
        message="Copied successfully", source=display(source), destination=display(target)
    )


@blueprint.post("/volumes/<ref>/move")
@validate_request(MoveRequest)
@validate_response(MoveResponse)
async def move(ref: str, data: MoveRequest) -> MoveResponse:
    source = parse_path(data.source, field="from")
    target = parse_path(data.target, field="to")
    volumes = get_daemon().volumes

    def work() -> None:
        with volumes.open(ref) as root:
            ops.move(root, source, target, overwrite=data.overwrite)

    await volumes.run_heavy(work)
    return MoveResponse.model_validate(
        {"message": "Moved successfully", "from": display(source), "to": display(target)}
    )


@blueprint.post("/volumes/<ref>/chmod")
@validate_request(ChmodRequest)
@validate_response(ChmodResponse)
async def chmod(ref: str, data: ChmodRequest) -> ChmodResponse:
    parts = parse_path(data.path)
    mode = int(data.mode, 8)
    if mode > 0o777:
        raise InvalidField("mode", "setuid, setgid and sticky bits are not allowed")
    volumes = get_daemon().volumes

    def work() -> None:
        with volumes.open(ref) as root:
            ops.change_mode(root, parts, mode)

    await volumes.run(work)
    return ChmodResponse(
        message="Mode changed successfully", path=display(parts), mode=f"{mode:04o}"
    )


# -- archives --------------------------------------------------------------------------


@blueprint.post("/volumes/<ref>/compress")
@validate_request(CompressRequest)
@validate_response(CompressResponse)
async def compress_volume(ref: str, data: CompressRequest) -> CompressResponse:
    output = parse_path(data.output_name, field="output_name")
    sources = [parse_path(p, field="paths") for p in data.paths or []]
    volumes = get_daemon().volumes

    def work() -> tuple[Parts, int]:
        with volumes.open(ref) as root:
            return compress(
                root, sources=sources, output=output, fmt=data.format, overwrite=data.overwrite
            )

    archive, size = await volumes.run_heavy(work)
    return CompressResponse(
        message="Compression successful", archive_path=display(archive), size=size
    )


@blueprint.post("/volumes/<ref>/decompress")
@validate_request(DecompressRequest)
@validate_response(DecompressResponse)
async def decompress_archive(ref: str, data: DecompressRequest) -> DecompressResponse:
    archive = parse_path(data.archive_path, field="archive_path")
    destination = parse_path(data.destination, field="destination")
    volumes = get_daemon().volumes

    def work() -> list[SkippedEntry]:
        with volumes.open(ref) as root:
            report = extract(
                root,
                archive=archive,
                destination=destination,
                limits=volumes.limits,
                overwrite=data.overwrite,
            )
        return [SkippedEntry(name=s.name, reason=s.reason) for s in report.skipped]

    skipped = await volumes.run_heavy(work)
    return DecompressResponse(
        message="Decompression successful", destination=display(destination), skipped=skipped
    )
