"""Errors become HTTP answers here, in one table, always as ``{"error": "..."}``.

Where the contract gives a wording it is used verbatim; a 405 also carries ``Allow``.
Unexpected exceptions are logged with their traceback and answered with a generic 500;
no route ever answers a traceback or an HTML page. This module must not decide anything
but the mapping.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from lightd.errors import (
    Conflict,
    EngineError,
    EngineUnavailable,
    Forbidden,
    ImageNotFound,
    InsufficientStorage,
    InvalidRequest,
    LightdError,
    NotFound,
    PayloadTooLarge,
    StoreError,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger("lightd.api")

# First match wins: more specific classes come first.
STATUS_BY_ERROR: tuple[tuple[type[LightdError], int], ...] = (
    (InvalidRequest, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (TooManyRequests, 429),
    (InsufficientStorage, 507),
    (ImageNotFound, 500),
    (EngineUnavailable, 503),
    (EngineError, 502),
    (StoreError, 500),
    (LightdError, 500),
)

HTTP_WORDING = {
    400: "Bad request",
    401: "Missing or invalid authorization token",
    403: "Invalid vendor header",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Request body too large",
    415: "Unsupported media type",
    429: "Too many requests",
}


def status_for(error: LightdError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def error_response(message: str, status: int, **extra: Any) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message}
    body.update(extra)
    return jsonify(body), status


def describe_validation(exc: ValidationError | Exception) -> str:
    """``Invalid field 'limits.memory': ...`` for the first problem of a pydantic error."""
    if not isinstance(exc, ValidationError):
        return "Invalid request body"
    errors = exc.errors()
    if not errors:
        return "Invalid request body"
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    kind = first["type"]
    if not loc:
        return f"Invalid request body: {first['msg']}"
    if kind == "missing":
        return f"Missing field '{loc}'"
    if kind == "extra_forbidden":
        return f"Unknown field '{loc}'"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"Invalid field '{loc}': {message}"


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(LightdError)
    async def _lightd(error: LightdError) -> tuple[Response, int]:
        status = status_for(error)
        if status >= 500:
            log.warning("request failed: %s", error.message)
        return error_response(error.message, status)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema(error: RequestSchemaValidationError) -> tuple[Response, int]:
        return error_response(describe_validation(error.validation_error), 400)

    @app.errorhandler(ValidationError)
    async def _model(error: ValidationError) -> tuple[Response, int]:
        return error_response(describe_validation(error), 400)

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        response, status = error_response(HTTP_WORDING.get(status, error.name), status)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            # RFC 9110: a 405 names the methods the resource does allow.
            response.headers["Allow"] = ", ".join(sorted(set(error.valid_methods)))
        return response, status

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unexpected error", exc_info=error)
        return error_response("Internal server error", 500)
