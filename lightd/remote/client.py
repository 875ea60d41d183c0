"""HTTP to the panel: ``POST <url>/update`` and ``GET <url>/health`` over httpx.AsyncClient.

Classifies every answer so the sender knows what to do: 2xx delivered; a connection
failure, a timeout, 5xx, 429 (and 1xx/3xx, which no panel should send) are
:class:`PanelUnavailable` (retry, not before a 429's or 503's ``Retry-After``); any other
4xx is :class:`PanelRefused` (drop). URL and
token are passed on every call, so a reload takes effect at the next request.
It must not log or raise with the token in a message, and must not retry by itself.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

from lightd import __version__

if TYPE_CHECKING:
    import httpx

# A panel's Retry-After is honoured up to this many seconds.
RETRY_AFTER_MAX_SECONDS = 600.0


class PanelUnavailable(Exception):
    """The panel could not take the notification now; a later attempt may succeed.

    ``retry_after``: the seconds the panel asked for (429 or 503 with ``Retry-After``).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delay-seconds or an HTTP date), capped.

    None when absent or unreadable; a date in the past is 0.
    """
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)


class PanelRefused(Exception):
    """The panel answered a 4xx other than 429: the notification will never be taken."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {detail}")


def _endpoint(url: str, path: str) -> str:
    return url.rstrip("/") + path


def _headers(token: str) -> dict[str, str]:
    headers = {"User-Agent": f"lightd/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class PanelClient:
    """The panel's HTTP client, made on first use: httpx (and the TLS context of its
    client) is loaded only on a node that talks to a panel."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def post_update(
        self, url: str, token: str, body: dict[str, str | int | float], *, timeout_seconds: float
    ) -> None:
        """Deliver one notification; raises PanelUnavailable or PanelRefused."""
        import httpx

        try:
            answer = await self._http.post(
                _endpoint(url, "/update"),
                json=body,
                headers=_headers(token),
                timeout=timeout_seconds,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise PanelUnavailable(_describe(exc)) from None
        code = answer.status_code
        if 200 <= code < 300:
            return
        if 400 <= code < 500 and code != 429:
            raise PanelRefused(code, answer.text[:200])
        wait = None
        if code in (429, 503):
            wait = retry_after_seconds(answer.headers.get("Retry-After"))
        raise PanelUnavailable(f"HTTP {code}", retry_after=wait)

    async def health(self, url: str, token: str, *, timeout_seconds: float) -> str | None:
        """None when the panel answers 2xx on /health; otherwise why not."""
        import httpx

        try:
            answer = await self._http.get(
                _endpoint(url, "/health"), headers=_headers(token), timeout=timeout_seconds
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _describe(exc)
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}"
