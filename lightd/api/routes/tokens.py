"""``POST /auth/tokens`` and ``DELETE /auth/tokens/<token>``: minted tokens (master only).

It must not return or log anything but the new token itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, field_validator
from quart import Blueprint
from quart_schema import validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody, RequestModel
from lightd.auth.ttl import parse_ttl
from lightd.errors import NotFound
from lightd.spec.ids import InternalId

blueprint = Blueprint("tokens", __name__)


class TokenRequest(RequestModel):
    ttl: str = "1h"
    remove_on_use: bool = False
    container: InternalId | None = None

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        parse_ttl(value)
        return value


class TokenResponse(BaseModel):
    token: str
    expires_at: str


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@blueprint.post("/auth/tokens")
@validate_request(TokenRequest)
@validate_response(TokenResponse)
@validate_response(ErrorBody, 400)
async def mint(data: TokenRequest) -> TokenResponse:
    token, expires_at = await get_services().tokens.mint(
        ttl_seconds=parse_ttl(data.ttl),
        remove_on_use=data.remove_on_use,
        container=data.container,
    )
    return TokenResponse(token=token, expires_at=iso_utc(expires_at))


@blueprint.delete("/auth/tokens/<token>")
@validate_response(MessageBody)
@validate_response(ErrorBody, 404)
async def revoke(token: str) -> MessageBody:
    if not await get_services().tokens.revoke(token):
        raise NotFound("Token not found")
    return MessageBody(message="Token revoked")
