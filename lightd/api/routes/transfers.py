"""Transfer routes: ``POST /transfers/tokens`` (master token), minted on the target node.

It must not return or log anything but the new token itself.
"""

from __future__ import annotations

from pydantic import BaseModel, field_validator
from quart import Blueprint
from quart_schema import validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, RequestModel
from lightd.api.routes.tokens import iso_utc
from lightd.auth.ttl import parse_ttl
from lightd.spec.ids import InternalId
from lightd.transfer.tokens import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS

blueprint = Blueprint("transfers", __name__)


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
