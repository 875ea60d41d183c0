"""Public routes: the contract's ping. Must stay cheap and need no token."""

from __future__ import annotations

import orjson
from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import document_response

blueprint = Blueprint("public", __name__)


class PingResponse(BaseModel):
    status: str
    message: str


PING_BODY = orjson.dumps(PingResponse(status="ok", message="Lightd is running").model_dump())


@blueprint.get("/api/v1/public/ping")
@document_response(PingResponse)
async def ping() -> Response:
    # The hottest route: a constant body, documented by the model, not re-validated.
    return Response(PING_BODY, status=200, content_type="application/json")
