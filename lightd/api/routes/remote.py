"""``GET /remote/config`` and ``POST /remote/config/reload`` (master token only).

Answers the contract's shape with the effective settings; ``remote`` also carries the
panel's reachability (``reachable``, ``last_checked``, ``last_error`` of the last
``GET <url>/health``) and ``pending`` (notifications waiting in the outbox). Must not
change settings other than through ``node.reload`` (the daemon's reload).
"""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody
from lightd.errors import ConfigError, InvalidRequest

blueprint = Blueprint("remote", __name__)


class ServerView(BaseModel):
    host: str
    port: int


class AuthorizationView(BaseModel):
    enabled: bool
    token: str


class RemoteView(BaseModel):
    enabled: bool
    url: str
    token: str
    reachable: bool | None  # null until the first health check, and while disabled
    last_checked: float | None  # epoch seconds of the last health check
    last_error: str | None  # why the last health check failed
    pending: int  # notifications not yet delivered


class RemoteConfigResponse(BaseModel):
    version: str
    server: ServerView
    authorization: AuthorizationView
    remote: RemoteView


@blueprint.get("/remote/config")
@validate_response(RemoteConfigResponse)
async def show() -> RemoteConfigResponse:
    services = get_services()
    settings = services.settings
    status = services.node.remote_status()
    return RemoteConfigResponse(
        version=settings.version,
        server=ServerView(host=settings.server.host, port=settings.server.port),
        authorization=AuthorizationView(
            enabled=settings.authorization.enabled, token=services.tokens.master_token
        ),
        remote=RemoteView(
            enabled=settings.remote.enabled,
            url=settings.remote.url,
            token=settings.remote.token,
            reachable=status.reachable,
            last_checked=status.last_checked,
            last_error=status.last_error,
            pending=status.pending,
        ),
    )


@blueprint.post("/remote/config/reload")
@validate_response(MessageBody)
@validate_response(ErrorBody, 400)
async def reload() -> MessageBody:
    try:
        get_services().node.reload()
    except ConfigError as exc:
        raise InvalidRequest(f"Configuration not reloaded: {exc.message}") from exc
    return MessageBody(message="Configuration reloaded successfully")
