"""``/network/ports…``: the contract's port pool routes, plus ``POST /network/ports/bulk``.

Validates bodies, paths and queries, calls :class:`~lightd.pool.PortPool` and shapes
the contract's answers (with ``reserved`` and ``container`` beside ``in_use``). It must
not decide anything about the pool itself and must not touch the document directly.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, field_validator
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody, RequestModel
from lightd.errors import InvalidField, InvalidRequest
from lightd.pool import PortView
from lightd.spec.ports import (
    MAX_PORT,
    MIN_PORT,
    IpAddress,
    PortEntry,
    PortKey,
    PortNumber,
    Protocol,
    normalise_ip,
    parse_port_range,
)

blueprint = Blueprint("network", __name__)

MAX_BULK = 10_000
"""Most ports one bulk request may add or delete (bounds the document and the work)."""


class AddPortRequest(RequestModel):
    ip: IpAddress
    port: PortNumber
    protocol: Protocol = "tcp"


class PortRef(RequestModel):
    ip: IpAddress
    port: PortNumber


class BulkAddRequest(RequestModel):
    """Either ``ports`` (a list) or ``ip`` + ``range`` (+ ``protocol``), not both."""

    ports: Annotated[list[AddPortRequest], Field(min_length=1, max_length=MAX_BULK)] | None = None
    ip: IpAddress | None = None
    range: str | None = None
    protocol: Protocol | None = None

    @field_validator("range")
    @classmethod
    def _range(cls, value: str | None) -> str | None:
        if value is None:
            return None
        span = parse_port_range(value)
        if len(span) > MAX_BULK:
            raise ValueError(f"at most {MAX_BULK} ports per request, {len(span)} asked")
        return value


class BulkDeleteRequest(RequestModel):
    ports: Annotated[list[PortRef], Field(max_length=MAX_BULK)]


class UseRequest(RequestModel):
    in_use: StrictBool = True


class RandomQuery(BaseModel):
    protocol: Protocol | None = None
    ip: IpAddress | None = None
    reserve: bool = False


class AddedPort(BaseModel):
    ip: str
    port: int
    protocol: str


class AddPortResponse(BaseModel):
    message: str
    ip: str
    port: int
    protocol: str


class BulkAddResponse(BaseModel):
    message: str
    added_count: int
    ports: list[AddedPort]


class PortResponse(BaseModel):
    ip: str
    port: int
    protocol: str
    in_use: bool
    reserved: bool
    container: str | None


class EntryError(BaseModel):
    """An invalid entry of ``ports.json`` (``index`` is null when the whole file is bad)."""

    index: int | None
    reason: str


class PortListResponse(BaseModel):
    ports: list[PortResponse]
    errors: list[EntryError]


class UseResponse(BaseModel):
    message: str
    ip: str
    port: int
    in_use: bool
    reserved: bool
    container: str | None


class SkippedPort(BaseModel):
    ip: str
    port: int
    reason: str


class BulkDeleteResponse(BaseModel):
    message: str
    deleted_count: int
    skipped: list[SkippedPort]


def port_key(ip: str, port: str) -> PortKey:
    """The path's ``<ip>/<port>`` as a pool key; 400 naming the field when invalid."""
    try:
        address = normalise_ip(ip)
    except ValueError as exc:
        raise InvalidField("ip", str(exc)) from None
    if not port.isascii() or not port.isdigit():
        raise InvalidField("port", f"{port!r} is not a port number")
    number = int(port)
    if not MIN_PORT <= number <= MAX_PORT:
        raise InvalidField("port", f"{number} is outside {MIN_PORT}-{MAX_PORT}")
    return address, number


def port_response(view: PortView) -> PortResponse:
    return PortResponse(
        ip=view.ip,
        port=view.port,
        protocol=view.protocol,
        in_use=view.in_use,
        reserved=view.reserved,
        container=view.container,
    )


@blueprint.post("/network/ports")
@validate_request(AddPortRequest)
@validate_response(AddPortResponse)
@validate_response(ErrorBody, 400)
async def add(data: AddPortRequest) -> AddPortResponse:
    entry = PortEntry(ip=data.ip, port=data.port, protocol=data.protocol)
    await get_services().ports.add([entry])
    return AddPortResponse(
        message="Port added to pool", ip=entry.ip, port=entry.port, protocol=entry.protocol
    )


@blueprint.post("/network/ports/bulk")
@validate_request(BulkAddRequest)
@validate_response(BulkAddResponse)
@validate_response(ErrorBody, 400)
async def add_many(data: BulkAddRequest) -> BulkAddResponse:
    if data.ports is not None:
        if data.ip is not None or data.range is not None or data.protocol is not None:
            raise InvalidRequest("Give either 'ports' or 'ip' and 'range', not both")
        entries = [PortEntry(ip=p.ip, port=p.port, protocol=p.protocol) for p in data.ports]
    else:
        if data.range is None:
            raise InvalidRequest("Missing field 'ports' (or 'ip' and 'range')")
        if data.ip is None:
            raise InvalidRequest("Missing field 'ip'")
        protocol: Protocol = data.protocol or "tcp"
        entries = [
            PortEntry(ip=data.ip, port=number, protocol=protocol)
            for number in parse_port_range(data.range)
        ]
    added = await get_services().ports.add(entries)
    return BulkAddResponse(
        message=f"Added {len(added)} ports to pool",
        added_count=len(added),
        ports=[AddedPort(ip=e.ip, port=e.port, protocol=e.protocol) for e in added],
    )


@blueprint.get("/network/ports")
@validate_response(PortListResponse)
async def list_ports() -> PortListResponse:
    listing = await get_services().ports.listing()
    errors = [EntryError(index=p.index, reason=p.reason) for p in listing.problems]
    if listing.document_error is not None:
        errors.insert(0, EntryError(index=None, reason=listing.document_error))
    return PortListResponse(ports=[port_response(v) for v in listing.ports], errors=errors)


@blueprint.get("/network/ports/random")
@validate_querystring(RandomQuery)
@validate_response(PortResponse)
@validate_response(ErrorBody, 400)
@validate_response(ErrorBody, 404)
async def random_port(query_args: RandomQuery) -> PortResponse:
    view = await get_services().ports.random(
        protocol=query_args.protocol, ip=query_args.ip, reserve=query_args.reserve
    )
    return port_response(view)


@blueprint.get("/network/ports/<ip>/<port>")
@validate_response(PortResponse)
@validate_response(ErrorBody, 400)
@validate_response(ErrorBody, 404)
async def show(ip: str, port: str) -> PortResponse:
    address, number = port_key(ip, port)
    return port_response(await get_services().ports.get(address, number))


@blueprint.put("/network/ports/<ip>/<port>/use")
@validate_request(UseRequest)
@validate_response(UseResponse)
@validate_response(ErrorBody, 400)
@validate_response(ErrorBody, 404)
@validate_response(ErrorBody, 409)
async def use(ip: str, port: str, data: UseRequest) -> UseResponse:
    address, number = port_key(ip, port)
    view = await get_services().ports.set_reserved(address, number, reserved=data.in_use)
    return UseResponse(
        message="Port usage updated",
        ip=view.ip,
        port=view.port,
        in_use=view.in_use,
        reserved=view.reserved,
        container=view.container,
    )


@blueprint.delete("/network/ports/<ip>/<port>")
@validate_response(MessageBody)
@validate_response(ErrorBody, 400)
@validate_response(ErrorBody, 404)
@validate_response(ErrorBody, 409)
async def delete(ip: str, port: str) -> MessageBody:
    address, number = port_key(ip, port)
    await get_services().ports.delete(address, number)
    return MessageBody(message="Port deleted from pool")


@blueprint.post("/network/ports/bulk-delete")
@validate_request(BulkDeleteRequest)
@validate_response(BulkDeleteResponse)
@validate_response(ErrorBody, 400)
async def delete_many(data: BulkDeleteRequest) -> BulkDeleteResponse:
    deleted, skipped = await get_services().ports.delete_many([(p.ip, p.port) for p in data.ports])
    return BulkDeleteResponse(
        message=f"Deleted {deleted} ports from pool",
        deleted_count=deleted,
        skipped=[SkippedPort(ip=s.ip, port=s.port, reason=s.reason) for s in skipped],
    )
