"""``/healthz`` (alive), ``/readyz`` (first reconcile done, engine answers), ``/metrics``.

Health answers are public and cheap (in-memory flags, no engine call); metrics need the
master token. Read-only.
"""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import validate_response

from lightd.api.context import get_services
from lightd.metrics import CONTENT_TYPE

blueprint = Blueprint("health", __name__)


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    reconciled: bool
    engine: bool


@blueprint.get("/healthz")
@validate_response(HealthResponse)
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@blueprint.get("/readyz")
@validate_response(ReadyResponse, 200)
@validate_response(ReadyResponse, 503)
async def readyz() -> tuple[ReadyResponse, int]:
    node = get_services().node
    reconciled = node.reconciled
    engine = node.engine_up
    ready = reconciled and engine
    body = ReadyResponse(
        status="ready" if ready else "not ready", reconciled=reconciled, engine=engine
    )
    return body, 200 if ready else 503


@blueprint.get("/metrics")
async def metrics() -> Response:
    return Response(get_services().node.metrics.render(), status=200, content_type=CONTENT_TYPE)
