"""HTTP to the panel: ``POST <url>/update`` and ``GET <url>/health`` over httpx.AsyncClient.

Classifies every answer so the sender knows what to do: 2xx delivered; a connection
failure, a timeout, 5xx, 429 (and 1xx/3xx, which no panel should send) are
:class:`PanelUnavailable` (retry); any other 4xx is :class:`PanelRefused` (drop). URL and
token are passed on every call, so a reload takes effect at the next request.
It must not log or raise with the token in a message, and must not retry by itself.
"""

from __future__ import annotations

import httpx

from lightd import __version__


class PanelUnavailable(Exception):
    """The panel could not take the notification now; a later attempt may succeed."""


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
    def __init__(self) -> None:
        self._http = httpx.AsyncClient(follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post_update(
        self, url: str, token: str, body: dict[str, str], *, timeout_seconds: float
    ) -> None:
        """Deliver one notification; raises PanelUnavailable or PanelRefused."""
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
        raise PanelUnavailable(f"HTTP {code}")

    async def health(self, url: str, token: str, *, timeout_seconds: float) -> str | None:
        """None when the panel answers 2xx on /health; otherwise why not."""
        try:
            answer = await self._http.get(
                _endpoint(url, "/health"), headers=_headers(token), timeout=timeout_seconds
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _describe(exc)
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}"
