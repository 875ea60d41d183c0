"""Pulls: a file fetched from an http(s) URL into a volume, in the background.

Each pull resolves its host once (through the injected :data:`Resolver`), lets the guard
(:mod:`lightd.transfer.guard`) pick an allowed address and connects to *that address*
with the original ``Host`` header and TLS server name (httpx ``sni_hostname``), so a
second, different DNS answer can never be used (no DNS rebinding). Redirects are never
followed by httpx: each one is checked, resolved and pinned the same way, at most
:data:`~lightd.transfer.guard.MAX_REDIRECTS`. Proxies from the environment are ignored.

The body streams through :meth:`lightd.fs.files.VolumeFiles.upload` (a temporary entry
renamed into place, removed on failure or cancel, swept at the next start after a
kill) under ``volumes.max_upload_bytes``; the disk-limit hook :data:`RoomCheck` is asked
before any byte is written and again before the file is published (the disk-limit
backends of ``lightd/fs/limits`` plug in there). At most :data:`PER_VOLUME` pulls run per
volume. Pulls live in memory: after a restart only their swept temporary files remain.
This module must not know about HTTP serving (Quart) or containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from lightd.errors import (
    FileExists,
    InvalidField,
    LightdError,
    PayloadTooLarge,
    PullNotFound,
    PullRefused,
    TooManyRequests,
)
from lightd.fs.files import VolumeFiles
from lightd.fs.paths import Parts, display
from lightd.transfer.guard import (
    MAX_REDIRECTS,
    REDIRECT_CODES,
    IpNetwork,
    PullUrl,
    file_name,
    follow,
    parse_url,
    pick_address,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("lightd.pull")

PER_VOLUME = 3
KEEP_FINISHED = 10
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

Resolver = Callable[[str, int], Awaitable[list[str]]]
RoomCheck = Callable[[str, int], Awaitable[None]]
PullState = Literal["running", "completed", "failed", "cancelled"]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (asked once per hop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PullRefused(f"{host} does not resolve ({exc.strerror or exc})") from None
    return [str(info[4][0]) for info in infos]


async def no_room_check(volume_id: str, size: int) -> None:
    """The default disk-limit hook: the disk itself is the limit (507 when full)."""


@dataclass
class Pull:
    id: str
    volume_id: str
    url: str
    path: str
    state: PullState = "running"
    bytes_done: int = 0
    bytes_total: int | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class PullFailed(LightdError):
    message = "Pull failed"


class Pulls:
    """The pulls of this node, by volume; started, listed and cancelled from the API."""

    def __init__(
        self,
        files: VolumeFiles,
        *,
        allow_networks: Callable[[], Sequence[IpNetwork]],
        max_bytes: Callable[[], int],
        resolver: Resolver = system_resolver,
        room: RoomCheck = no_room_check,
        verify_tls: bool = True,
    ) -> None:
        self._files = files
        self._allow = allow_networks
        self._max_bytes = max_bytes
        self._resolve = resolver
        self._room = room
        self._verify = verify_tls
        self._pulls: dict[str, list[Pull]] = {}

    async def _address(self, url: PullUrl) -> str:
        if url.literal is not None:
            return pick_address(url.host, [url.host], self._allow())
        return pick_address(url.host, await self._resolve(url.host, url.port), self._allow())

    async def start(
        self, ref: str, raw_url: str, parts: Parts, *, use_header: bool, overwrite: bool
    ) -> Pull:
        """Check the URL and its first address now (400), then fetch in the background."""
        volume = await self._files.volume(ref)
        url = parse_url(raw_url)
        mine = self._pulls.setdefault(volume.id, [])
        if sum(1 for p in mine if p.state == "running") >= PER_VOLUME:
            raise TooManyRequests(f"Too many pulls for this volume (at most {PER_VOLUME} at once)")
        if not use_header and not parts:
            raise InvalidField("path", "must name the file (or set use_header)")
        if not overwrite and not use_header and await self._files.lstat(volume.id, parts):
            raise FileExists(f"File already exists: {display(parts)}")
        address = await self._address(url)
        pull = Pull(
            id=secrets.token_hex(8),
            volume_id=volume.id,
            url=url.url,
            path=display(parts) if not use_header else "",
        )
        mine.append(pull)
        pull.task = asyncio.create_task(
            self._run(pull, url, address, parts, use_header=use_header, overwrite=overwrite),
            name=f"pull-{pull.id}",
        )
        return pull

    def list(self, volume_id: str) -> list[Pull]:
        return list(self._pulls.get(volume_id, []))

    async def cancel(self, volume_id: str, pull_id: str) -> bool:
        """Stop a running pull (its temporary file is removed; True) or forget a finished one."""
        mine = self._pulls.get(volume_id, [])
        for pull in mine:
            if pull.id == pull_id:
                break
        else:
            raise PullNotFound()
        if pull.state == "running" and pull.task is not None:
            pull.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pull.task
            return True
        mine.remove(pull)
        return False

    async def close(self) -> None:
        tasks = [p.task for ps in self._pulls.values() for p in ps if p.task and not p.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finish(self, pull: Pull, state: PullState, error: str | None = None) -> None:
        pull.state = state
        pull.error = error
        pull.finished_at = time.time()
        mine = self._pulls.get(pull.volume_id, [])
        done = [p for p in mine if p.state != "running"]
        for old in done[:-KEEP_FINISHED]:
            mine.remove(old)

    async def _run(
        self,
        pull: Pull,
        url: PullUrl,
        address: str,
        parts: Parts,
        *,
        use_header: bool,
        overwrite: bool,
    ) -> None:
        import httpx

        try:
            await self._fetch(pull, url, address, parts, use_header=use_header, overwrite=overwrite)
        except asyncio.CancelledError:
            self._finish(pull, "cancelled", "cancelled")
            raise
        except PayloadTooLarge:
            limit = self._max_bytes()
            reason = f"body larger than volumes.max_upload_bytes ({limit} bytes)"
            self._finish(pull, "failed", reason)
        except LightdError as exc:
            self._finish(pull, "failed", exc.message)
        except httpx.HTTPError as exc:
            self._finish(pull, "failed", f"HTTP error: {type(exc).__name__}: {exc}")
        except Exception as exc:  # never lose a pull's outcome to an unexpected error
            log.exception("pull %s failed", pull.id)
            self._finish(pull, "failed", f"unexpected error: {type(exc).__name__}")
        else:
            self._finish(pull, "completed")

    async def _fetch(
        self,
        pull: Pull,
        url: PullUrl,
        address: str,
        parts: Parts,
        *,
        use_header: bool,
        overwrite: bool,
    ) -> None:
        import httpx

        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        async with httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=timeout, verify=self._verify
        ) as client:
            current, pinned = url, address
            for hops in range(MAX_REDIRECTS + 2):
                request = client.build_request(
                    "GET",
                    httpx.URL(
                        scheme=current.scheme,
                        host=pinned,
                        port=current.port,
                        raw_path=current.target.encode("ascii", "strict"),
                    ),
                    headers={
                        "Host": current.host_header,
                        "User-Agent": "lightd-pull",
                        "Accept-Encoding": "identity",
                    },
                    extensions=(
                        {"sni_hostname": current.host}
                        if current.scheme == "https" and current.literal is None
                        else {}
                    ),
                )
                response = await client.send(request, stream=True)
                try:
                    if response.status_code in REDIRECT_CODES:
                        current = follow(
                            current,
                            response.status_code,
                            response.headers.get("location"),
                            hops + 1,
                        )
                        pinned = await self._address(current)
                        continue
                    if response.status_code != 200:
                        raise PullFailed(
                            f"Pull failed: {current.url} answered {response.status_code}"
                        )
                    await self._store(pull, current, response, parts, use_header, overwrite)
                    return
                finally:
                    await response.aclose()
            raise PullRefused(f"more than {MAX_REDIRECTS} redirects")

    async def _store(
        self,
        pull: Pull,
        url: PullUrl,
        response: httpx.Response,
        parts: Parts,
        use_header: bool,
        overwrite: bool,
    ) -> None:
        if use_header:
            name = file_name(url, response.headers.get("content-disposition"), use_header=True)
            parts = (*parts, name)
            pull.path = display(parts)
        declared = _length(response)
        pull.bytes_total = declared
        limit = self._max_bytes()
        if declared is not None and declared > limit:
            raise PayloadTooLarge()
        await self._room(pull.volume_id, declared or 0)

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_raw():
                pull.bytes_done += len(chunk)
                yield chunk
            if declared is not None and pull.bytes_done != declared:
                raise PullFailed(
                    f"Pull failed: body ended after {pull.bytes_done} of {declared} bytes"
                )
            await self._room(pull.volume_id, pull.bytes_done)

        try:
            await self._files.upload(
                pull.volume_id,
                parts,
                counted(),
                limit=limit,
                declared_length=declared,
                overwrite=overwrite,
            )
        except FileExists:
            raise FileExists(f"File already exists: {display(parts)}") from None


def _length(response: httpx.Response) -> int | None:
    raw = response.headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw.strip())
