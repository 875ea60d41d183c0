"""Volume routes: the contract's create, files, folders, copy, listing, compress and
decompress, plus list/show/delete volumes, disk limits, read, upload, delete, move and
chmod. ``POST /volumes`` without a body answers exactly the contract's shape; with
``{"disk_limit": N}`` the volume is made with that limit.

Handlers validate bodies and query strings, parse every path with
:func:`lightd.fs.paths.parse_path`, and hand the work to the files facade
(:class:`~lightd.fs.files.VolumeFiles`), which runs it in threads so the event loop keeps
answering. They must not touch a volume's files themselves: every file access goes
through :mod:`lightd.fs`, which never follows a symlink.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mimetypes
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, g, request
from quart_schema import validate_querystring, validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody, RequestModel
from lightd.errors import InvalidField, InvalidRequest
from lightd.fs import VolumeInfo
from lightd.fs.archive import ArchiveFormat
from lightd.fs.files import VolumeFiles
from lightd.fs.paths import Parts, display, parse_path
from lightd.fs.search import (
    DEFAULT_DEPTH,
    DEFAULT_LIMIT,
    MAX_DEPTH,
    MAX_LIMIT,
    MAX_PATTERN,
    MIN_PATTERN,
    SearchQuery,
)
from lightd.spec.container import MIN_DISK_BYTES

blueprint = Blueprint("volumes", __name__)

DRAIN_LIMIT = 1024 * 1024


# -- models ----------------------------------------------------------------------------


class CreatedVolume(BaseModel):
    volume_id: str
    path: str


class CreateVolumeRequest(RequestModel):
    disk_limit: int | None = Field(default=None, ge=MIN_DISK_BYTES, le=2**60, description="bytes")


class LimitRequest(RequestModel):
    disk_limit: int | None = Field(ge=MIN_DISK_BYTES, le=2**60, description="bytes; null: none")


class VolumeView(BaseModel):
    volume_id: str
    path: str
    size: int
    created_at: int
    disk_limit: int | None
    disk_usage: int


class LimitResponse(BaseModel):
    message: str
    volume_id: str
    disk_limit: int | None
    disk_usage: int


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


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str | None = Field(
        default=None,
        min_length=MIN_PATTERN,
        max_length=MAX_PATTERN,
        description="glob (with * ? [) or substring of the name, case-insensitive",
    )
    content: str | None = Field(default=None, min_length=1, max_length=1024)
    path: str | None = None
    max_depth: int = Field(default=DEFAULT_DEPTH, ge=1, le=MAX_DEPTH)
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    include_skipped: bool = False


class SearchMatch(BaseModel):
    path: str
    type: Literal["file", "directory", "symlink"]
    size: int
    modified_at: int
    line: int | None = None


class SearchResponse(BaseModel):
    matches: list[SearchMatch]
    truncated: bool


class PullRequest(RequestModel):
    url: str = Field(min_length=1, max_length=8192)
    path: str = ""
    use_header: bool = False
    overwrite: bool = False


class PullStarted(BaseModel):
    pull_id: str


class PullView(BaseModel):
    pull_id: str
    url: str
    path: str
    state: Literal["running", "completed", "failed", "cancelled"]
    bytes_done: int
    bytes_total: int | None
    error: str | None
    started_at: float
    finished_at: float | None


class PullList(BaseModel):
    pulls: list[PullView]


# -- helpers ---------------------------------------------------------------------------


def _files() -> VolumeFiles:
    return get_services().files


def _view(info: VolumeInfo) -> VolumeView:
    return VolumeView(
        volume_id=info.id,
        path=str(info.path),
        size=info.size,
        created_at=info.created_at,
        disk_limit=info.disk_limit,
        disk_usage=info.size,
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
@validate_request(CreateVolumeRequest)
@validate_response(CreatedVolume, 201)
@validate_response(ErrorBody, 409)
async def create_volume(data: CreateVolumeRequest) -> tuple[CreatedVolume, int]:
    volume = await _files().create_volume(disk_limit=data.disk_limit)
    return CreatedVolume(volume_id=volume.id, path=str(volume.path)), 201


@blueprint.post("/volumes/<ref>/limit")
@validate_request(LimitRequest)
@validate_response(LimitResponse)
@validate_response(ErrorBody, 409)
async def set_limit(ref: str, data: LimitRequest) -> LimitResponse:
    info = await _files().set_disk_limit(ref, data.disk_limit)
    return LimitResponse(
        message="Disk limit updated",
        volume_id=info.id,
        disk_limit=info.disk_limit,
        disk_usage=info.size,
    )


@blueprint.get("/volumes")
@validate_response(VolumeList)
async def list_volumes() -> VolumeList:
    return VolumeList(volumes=[_view(info) for info in await _files().volumes()])


@blueprint.get("/volumes/<ref>")
@validate_response(VolumeView)
@validate_response(ErrorBody, 404)
async def show_volume(ref: str) -> VolumeView:
    return _view(await _files().volume(ref))


@blueprint.delete("/volumes/<ref>")
@validate_response(MessageBody)
@validate_response(ErrorBody, 409)
async def delete_volume(ref: str) -> MessageBody:
    await _files().delete_volume(ref)
    return MessageBody(message="Volume deleted successfully")


# -- files -----------------------------------------------------------------------------


@blueprint.post("/volumes/<ref>/files")
@validate_request(WriteFileRequest)
@validate_response(PathMessage)
async def write_file(ref: str, data: WriteFileRequest) -> PathMessage:
    parts = parse_path(data.path)
    await _files().write(ref, parts, _decode(data))
    return PathMessage(message="File written successfully", path=display(parts))


@blueprint.get("/volumes/<ref>/files")
@validate_querystring(PathQuery)
@validate_response(FileList)
async def list_files(ref: str, query_args: PathQuery) -> FileList:
    entries = await _files().list(ref, parse_path(query_args.path or ""))
    return FileList(
        files=[
            FileEntry(name=e.name, type=e.type, size=e.size, mode=e.mode, modified_at=e.modified_at)
            for e in entries
        ]
    )


@blueprint.get("/volumes/<ref>/search")
@validate_querystring(SearchArgs)
@validate_response(SearchResponse)
async def search_files(ref: str, query_args: SearchArgs) -> SearchResponse:
    query = SearchQuery(
        pattern=query_args.pattern,
        content=None if query_args.content is None else query_args.content.encode("utf-8"),
        max_depth=query_args.max_depth,
        limit=query_args.limit,
        include_skipped=query_args.include_skipped,
        content_max_bytes=get_services().settings.volumes.search_content_max_bytes,
    )
    result = await _files().search(ref, parse_path(query_args.path or ""), query)
    matches = [
        SearchMatch(path=m.path, type=m.type, size=m.size, modified_at=m.modified_at, line=m.line)
        for m in result.matches
    ]
    return SearchResponse(matches=matches, truncated=result.truncated)


@blueprint.delete("/volumes/<ref>/files")
@validate_querystring(PathQuery)
@validate_response(PathMessage)
async def delete_file(ref: str, query_args: PathQuery) -> PathMessage:
    parts = _required(query_args)
    await _files().delete(ref, parts)
    return PathMessage(message="Deleted successfully", path=display(parts))


@blueprint.get("/volumes/<ref>/files/content")
@validate_querystring(PathQuery)
async def read_file(ref: str, query_args: PathQuery) -> Response:
    parts = _required(query_args)
    stream = await _files().read(ref, parts)
    kind = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    response = Response(stream.chunks(), mimetype=kind)
    response.headers["Content-Length"] = str(stream.size)
    return response


async def _discard_rest_of_body() -> None:
    """Read what is left of a refused upload so the connection can serve the next request.

    A body already read to its end yields nothing more. Past :data:`DRAIN_LIMIT` the
    answer asks the client to close the connection instead: Hypercorn closes it anyway
    when a response ends before its request body.
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
    try:
        parts = _required(query_args)
        limit = get_services().settings.volumes.max_upload_bytes
        await _files().upload(
            ref, parts, request.body, limit=limit, declared_length=request.content_length
        )
    except Exception:
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
    await _files().make_folder(ref, parts)
    return PathMessage(message="Folder created successfully", path=display(parts))


@blueprint.post("/volumes/<ref>/copy")
@validate_request(CopyRequest)
@validate_response(CopyResponse)
async def copy(ref: str, data: CopyRequest) -> CopyResponse:
    source = parse_path(data.source, field="source")
    target = parse_path(data.destination, field="destination")
    await _files().copy(ref, source, target, overwrite=data.overwrite)
    return CopyResponse(
        message="Copied successfully", source=display(source), destination=display(target)
    )


@blueprint.post("/volumes/<ref>/move")
@validate_request(MoveRequest)
@validate_response(MoveResponse)
async def move(ref: str, data: MoveRequest) -> MoveResponse:
    source = parse_path(data.source, field="from")
    target = parse_path(data.target, field="to")
    await _files().move(ref, source, target, overwrite=data.overwrite)
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
    await _files().chmod(ref, parts, mode)
    return ChmodResponse(
        message="Mode changed successfully", path=display(parts), mode=f"{mode:04o}"
    )


# -- pulls -----------------------------------------------------------------------------


@blueprint.post("/volumes/<ref>/pull")
@validate_request(PullRequest)
@validate_response(PullStarted, 202)
@validate_response(ErrorBody, 429)
async def start_pull(ref: str, data: PullRequest) -> tuple[PullStarted, int]:
    parts = parse_path(data.path)
    pull = await get_services().pulls.start(
        ref, data.url, parts, use_header=data.use_header, overwrite=data.overwrite
    )
    return PullStarted(pull_id=pull.id), 202


@blueprint.get("/volumes/<ref>/pull")
@validate_response(PullList)
async def list_pulls(ref: str) -> PullList:
    volume = await _files().volume(ref)
    return PullList(
        pulls=[
            PullView(
                pull_id=p.id,
                url=p.url,
                path=p.path,
                state=p.state,
                bytes_done=p.bytes_done,
                bytes_total=p.bytes_total,
                error=p.error,
                started_at=p.started_at,
                finished_at=p.finished_at,
            )
            for p in get_services().pulls.list(volume.id)
        ]
    )


@blueprint.delete("/volumes/<ref>/pull/<pull_id>")
@validate_response(MessageBody)
async def cancel_pull(ref: str, pull_id: str) -> MessageBody:
    volume = await _files().volume(ref)
    if await get_services().pulls.cancel(volume.id, pull_id):
        return MessageBody(message="Pull cancelled")
    return MessageBody(message="Pull removed")


# -- archives --------------------------------------------------------------------------


@blueprint.post("/volumes/<ref>/compress")
@validate_request(CompressRequest)
@validate_response(CompressResponse)
async def compress_volume(ref: str, data: CompressRequest) -> CompressResponse:
    output = parse_path(data.output_name, field="output_name")
    sources = [parse_path(p, field="paths") for p in data.paths or []]
    archive, size = await _files().compress(
        ref, sources=sources, output=output, fmt=data.format, overwrite=data.overwrite
    )
    return CompressResponse(
        message="Compression successful", archive_path=display(archive), size=size
    )


@blueprint.post("/volumes/<ref>/decompress")
@validate_request(DecompressRequest)
@validate_response(DecompressResponse)
async def decompress_archive(ref: str, data: DecompressRequest) -> DecompressResponse:
    archive = parse_path(data.archive_path, field="archive_path")
    destination = parse_path(data.destination, field="destination")
    report = await _files().extract(
        ref, archive=archive, destination=destination, overwrite=data.overwrite
    )
    return DecompressResponse(
        message="Decompression successful",
        destination=display(destination),
        skipped=[SkippedEntry(name=s.name, reason=s.reason) for s in report.skipped],
    )
