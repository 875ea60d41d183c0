"""``/ui/``: the web console's static files, public, with strict security headers.

The page itself holds no secret (everything it shows comes through the authenticated
API), so its files need no token and no vendor media type. Only files shipped in
:mod:`lightd.ui` are served, by exact name from a list built once; nothing the request
names is ever joined to a filesystem path. It must not serve anything dynamic.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources

from quart import Blueprint, Response, request
from quart_schema import hide

blueprint = Blueprint("ui", __name__)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# A Host header is the client's text: only a plain host[:port] goes into the policy.
SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


@cache
def shipped() -> dict[str, tuple[bytes, str, str]]:
    """Every file of the package by name: its bytes, content type and ETag."""
    files: dict[str, tuple[bytes, str, str]] = {}
    for entry in resources.files("lightd.ui").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            data = entry.read_bytes()
            etag = hashlib.sha256(data).hexdigest()[:32]
            files[entry.name] = (data, CONTENT_TYPES[suffix], etag)
    return files


def content_security_policy(host: str) -> str:
    # 'self' in connect-src does not cover ws: in every browser: name the socket origins.
    sockets = f" ws://{host} wss://{host}" if SAFE_HOST.match(host) else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def secured(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(request.host)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


@blueprint.get("/ui")
@hide
async def bare() -> Response:
    if request.path == "/ui":  # the map's loose slashes also send "/ui/" here
        return secured(Response(b"", status=308, headers={"Location": "/ui/"}))
    return await asset("index.html")


@blueprint.get("/ui/")
@hide
async def index() -> Response:
    return await asset("index.html")


@blueprint.get("/ui/<path:name>")
@hide
async def asset(name: str) -> Response:
    found = shipped().get(name)
    if found is None:
        response = Response(b'{"error":"Not found"}', status=404, content_type="application/json")
        return secured(response)
    data, content_type, etag = found
    if request.if_none_match.contains(etag):
        return secured(Response(b"", status=304, headers={"ETag": f'"{etag}"'}))
    response = Response(data, status=200, content_type=content_type)
    response.headers["ETag"] = f'"{etag}"'
    response.headers["Cache-Control"] = "no-cache"
    return secured(response)
