"""Public routes: the contract's ping. Must stay cheap and need no token."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_response

blueprint = Blueprint("public", __name__)


class PingResponse(BaseModel):
    status: str
    message: str


@blueprint.get("/api/v1/public/ping")
@validate_response(PingResponse)
async def ping() -> PingResponse:
    return PingResponse(status="ok", message="Lightd is running")
