"""A small client of the daemon's API for the command line (httpx, blocking).

Finds the daemon's URL (``--url``, else ``server.host``/``server.port`` of the config)
and the master token (``LIGHTD_TOKEN``, else ``authorization.token``, else
``<data_dir>/master.token``), and turns error answers into :class:`ApiError` with the
daemon's own message. It must never print or log the token.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import httpx

from lightd.auth.master import master_token_path
from lightd.config import Settings

VENDOR_MEDIA_TYPE = "application/vnd.pkglatv1+json"
TOKEN_ENV = "LIGHTD_TOKEN"  # noqa: S105 (the name of a variable)


class ApiError(Exception):
    """The daemon answered with an error, or could not be asked."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class DaemonUnreachable(ApiError):
    """Nothing answers at the URL (the daemon is not running there)."""


def daemon_url(settings: Settings, override: str | None = None) -> str:
    if override:
        return override.rstrip("/")
    host = settings.server.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{settings.server.port}"


def master_token(settings: Settings) -> str | None:
    """The master token from the environment, the config or the data folder."""
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    if settings.authorization.token:
        return settings.authorization.token
    try:
        value = master_token_path(settings.storage.data_dir).read_text("utf-8").strip()
    except OSError:
        return None
    return value or None


class DaemonClient:
    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Accept": VENDOR_MEDIA_TYPE}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None) -> Any:
        try:
            answer = self._http.request(method, path, json=json)
        except httpx.ConnectError as exc:
            raise DaemonUnreachable(f"no lightd answers at {self.url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"asking lightd at {self.url} failed: {exc}") from exc
        if answer.status_code >= 400:
            try:
                message = str(answer.json().get("error", answer.text))
            except ValueError:
                message = answer.text.strip() or answer.reason_phrase
            raise ApiError(
                f"{method} {path}: {answer.status_code} {message}", status=answer.status_code
            )
        try:
            return answer.json()
        except ValueError as exc:
            raise ApiError(f"{method} {path}: the answer is not JSON") from exc

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)
