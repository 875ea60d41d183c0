"""Authentication and the vendor check for every request, and the request log line.

Every route but the public ones needs ``Authorization: Bearer <master token>`` (compared
in constant time); then every REST route needs an ``Accept`` header naming the vendor
media type ``application/vnd.pkglat…``. WebSocket upgrades authenticate with a
``token`` query parameter instead (browsers cannot set headers) and skip the vendor
check. This module must never log a token or a query string.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from quart import Quart, Request, Response, request, websocket

from lightd.api.context import get_services
from lightd.errors import Forbidden, Unauthorized
from lightd.logsetup import log_request

log = logging.getLogger("lightd.http")

PUBLIC_PATHS = frozenset({"/api/v1/public/ping", "/healthz", "/readyz", "/ui"})
PUBLIC_PREFIXES = ("/ui/",)  # the web console's static files (no secret in them)
DOCS_PATHS = frozenset({"/docs", "/openapi.json"})
# Scrapers and browsers do not send the vendor media type.
VENDOR_EXEMPT_PATHS = DOCS_PATHS | {"/metrics"}
VENDOR_MEDIA_PREFIX = "application/vnd.pkglat"


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None if malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def accepts_vendor(accept: str | None) -> bool:
    """True when one media range of ``accept`` is an ``application/vnd.pkglat…`` type."""
    if not accept:
        return False
    for media_range in accept.split(","):
        media_type = media_range.split(";", 1)[0].strip().lower()
        if media_type.startswith(VENDOR_MEDIA_PREFIX):
            return True
    return False


def install_guard(app: Quart) -> None:
    @app.before_request
    async def _authenticate() -> None:
        req = current_request()
        path = req.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return
        services = get_services()
        if path in DOCS_PATHS and services.settings.server.docs_public:
            return
        headers = req.headers
        if services.tokens.auth_enabled:
            token = bearer_token(headers.get("Authorization"))
            if token is None or not services.tokens.is_master(token):
                raise Unauthorized()
        if path not in VENDOR_EXEMPT_PATHS and not accepts_vendor(headers.get("Accept")):
            raise Forbidden()

    @app.after_request
    async def _log_request(response: Response) -> Response:
        req = current_request()
        started = getattr(req, "started", None)
        seconds = time.perf_counter() - started if started else 0.0
        rule = req.url_rule.rule if req.url_rule is not None else "unmatched"
        status = response.status_code
        get_services().node.metrics.observe_request(req.method, rule, status, seconds)
        log_request(req.method, req.path, status, seconds * 1000)
        return response

    @app.before_websocket
    async def _websocket_started() -> None:
        log.info("WS %s", websocket.path, extra={"fields": {"path": websocket.path}})


def current_request() -> Request:
    """The request object itself: one context lookup instead of one per attribute."""
    return cast(Request, cast(Any, request)._get_current_object())
