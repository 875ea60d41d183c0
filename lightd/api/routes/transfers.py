"""Transfer routes: tokens and the receive side on the target, start and status on the source.

``POST /transfers/tokens`` (master token) mints on the target; ``POST /transfers`` is
what a source node calls with that token (the passes), then with its commit secret
(``commit`` and ``abort``, :mod:`lightd.transfer.commit`); ``POST
/containers/<id>/transfer``, ``GET``/``DELETE /transfers/<id>`` (master token) start,
show and cancel.

It must not return or log anything but the new token itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator
from quart import Blueprint, request
from quart_schema import validate_request, validate_response
from werkzeug.routing import BaseConverter

from lightd.api.context import get_services
from lightd.api.guard import bearer_token
from lightd.api.routes.common import ErrorBody, RequestModel
from lightd.api.routes.tokens import iso_utc
from lightd.auth.ttl import parse_ttl
from lightd.spec.ids import InternalId
from lightd.transfer.commit import (
    AWAITING,
    COMMIT_SECONDS_HEADER,
    PROTOCOL,
    PROTOCOL_HEADER,
    TRANSFER_ID_HEADER,
)
from lightd.transfer.tokens import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS

blueprint = Blueprint("transfers", __name__)


class TransferIdConverter(BaseConverter):
    """A transfer id (16 lowercase hex digits), so ``/transfers/tokens`` is not one."""

    regex = "[0-9a-f]{16}"


class TransferTokenRequest(RequestModel):
    internal_id: InternalId
    ttl: str = f"{DEFAULT_TTL_SECONDS // 60}m"

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        if parse_ttl(value) > MAX_TTL_SECONDS:
            raise ValueError(f"must be at most {MAX_TTL_SECONDS // 3600} hours")
        return value


class TransferTokenResponse(BaseModel):
    token: str
    expires_at: str


@blueprint.post("/transfers/tokens")
@validate_request(TransferTokenRequest)
@validate_response(TransferTokenResponse)
@validate_response(ErrorBody, 400)
async def mint(data: TransferTokenRequest) -> TransferTokenResponse:
    token, expires_at = await get_services().transfer_tokens.mint(
        data.internal_id, parse_ttl(data.ttl)
    )
    return TransferTokenResponse(token=token, expires_at=iso_utc(expires_at))


class TransferRequest(RequestModel):
    target_url: str = Field(min_length=1, max_length=2048)
    token: str = Field(min_length=1, max_length=256)
    include_backups: bool = False
    live: bool = True
    keep_source: bool = False


class TransferStarted(BaseModel):
    transfer_id: str


class TransferView(BaseModel):
    transfer_id: str
    internal_id: str
    role: Literal["source", "target"]
    state: Literal["running", "completed", "failed", "cancelled"]
    phase: str
    bytes_done: int
    bytes_total: int | None
    error: str | None


@blueprint.post("/containers/<internal_id>/transfer")
@validate_request(TransferRequest)
@validate_response(TransferStarted, 202)
async def start_transfer(internal_id: str, data: TransferRequest) -> tuple[TransferStarted, int]:
    transfer = await get_services().transfers.start(
        internal_id,
        target_url=data.target_url,
        token=data.token,
        include_backups=data.include_backups,
        live=data.live,
        keep_source=data.keep_source,
    )
    return TransferStarted(transfer_id=transfer.id), 202


@blueprint.post("/transfers")
@validate_response(TransferView)
async def receive_transfer() -> tuple[TransferView, int, dict[str, str]]:
    """A node sends a container here (``Authorization: Bearer <transfer token>``, or the
    secret of its first pass for the final one, or its commit secret for ``commit`` and
    ``abort`` with ``X-Lightd-Transfer-Id``; ``X-Lightd-Transfer-Pass``)."""
    token = bearer_token(request.headers.get("Authorization")) or ""
    internal_id = request.headers.get("X-Lightd-Internal-Id", "")
    phase = request.headers.get("X-Lightd-Transfer-Pass", "only")
    transfers = get_services().transfers
    headers = {PROTOCOL_HEADER: str(PROTOCOL)}
    if phase in ("commit", "abort"):
        transfer_id = request.headers.get(TRANSFER_ID_HEADER, "")
        settled = await transfers.settle_here(phase, token, internal_id, transfer_id)
        return TransferView.model_validate(settled.view()), 200, headers
    transfer, secret = await transfers.receive(token, internal_id, request.body, phase=phase)
    if secret:
        headers["X-Lightd-Transfer-Secret"] = secret
    if transfer.phase == AWAITING:
        headers[COMMIT_SECONDS_HEADER] = f"{transfers.commit_seconds():g}"
    return TransferView.model_validate(transfer.view()), 200, headers


@blueprint.get("/transfers/<transfer_id:transfer_id>")
@validate_response(TransferView)
@validate_response(ErrorBody, 404)
async def show_transfer(transfer_id: str) -> TransferView:
    return TransferView.model_validate(get_services().transfers.get(transfer_id).view())


@blueprint.delete("/transfers/<transfer_id:transfer_id>")
@validate_response(TransferView)
@validate_response(ErrorBody, 404)
async def cancel_transfer(transfer_id: str) -> TransferView:
    transfer = await get_services().transfers.cancel(transfer_id)
    return TransferView.model_validate(transfer.view())
