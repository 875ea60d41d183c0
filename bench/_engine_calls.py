"""A counting proxy on the Docker engine's Unix socket (bench helper, not a benchmark).

:class:`CallCounter` listens on a Unix socket of its own, forwards every connection to
the engine's socket byte for byte, and reads the requests on the way in: each one is
counted under its method and its path with ids and names replaced by ``{}`` and the
query left out (``GET /containers/{}/json``). A daemon pointed at it
(``LIGHTD_DOCKER__BASE_URL=unix://<path>``) thereby reports how many engine calls of
each kind it made: a load-insensitive measure of its work. Streams the engine keeps
open (events, logs, stats, attach) count once, when they are asked for; a hijacked
connection (attach) is not parsed any further.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import Counter
from pathlib import Path

ENGINE_SOCKET = "/var/run/docker.sock"
_VERSION = re.compile(r"^/v\d+\.\d+")
# The path segments that name an object (everything after these words, one segment).
_NAMED = {"containers", "images", "volumes", "networks", "exec", "plugins"}
_WORDS = {"json", "create", "prune", "load", "search", "get", "events", "version"}


def shape(method: str, target: str) -> str:
    """``GET /v1.41/containers/abc/json?x=1`` as ``GET /containers/{}/json``."""
    path = _VERSION.sub("", target.split("?", 1)[0])
    parts = path.strip("/").split("/")
    out: list[str] = []
    for index, part in enumerate(parts):
        named = index > 0 and parts[index - 1] in _NAMED and part not in _WORDS
        out.append("{}" if named else part)
    return f"{method} /{'/'.join(out)}"


class CallCounter:
    """The proxy, served by an event loop on a thread of its own (see the module text)."""

    def __init__(self, path: Path, *, upstream: str = ENGINE_SOCKET) -> None:
        self.path = path
        self._upstream = upstream
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="engine-calls", daemon=True)

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> CallCounter:
        self._thread.start()
        self._ready.wait(10)
        return self

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_soon(self._loop.stop)

        self._loop.call_soon_threadsafe(close)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()
        # The cancelled connections finish, so that none is left pending at exit.
        pending = asyncio.all_tasks(self._loop)
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self._upstream)
        except OSError:
            writer.close()
            return
        back = asyncio.ensure_future(_pipe(up_reader, writer))
        try:
            await self._requests(reader, up_writer)
            await back
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            back.cancel()  # the proxy stops, or a side closed: the connection ends
        finally:
            for w in (up_writer, writer):
                w.close()

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            up.write(head)
            lines = head.decode("latin-1").split("\r\n")
            method, target = ([*lines[0].split(" "), "", ""])[:2]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            with self._lock:
                self._counts[shape(method, target)] += 1
            length = int(headers.get("content-length") or 0)
            if length:
                up.write(await reader.readexactly(length))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    up.write(size_line)
                    size = int(size_line.split(b";")[0], 16)
                    up.write(await reader.readexactly(size + 2))
                    if size == 0:
                        break
            await up.drain()
            if "upgrade" in headers or "/attach" in target:
                await _pipe(reader, up)  # hijacked: raw bytes from now on
                return


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
        return
    finally:
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()


def per_container(counts: Counter[str], containers: int) -> str:
    """The counts as a table: calls of each kind, and per container."""
    total = sum(counts.values())
    rows = [f"    {'calls':>7} {'/container':>10}  kind"]
    for kind, n in counts.most_common():
        rows.append(f"    {n:>7} {n / max(containers, 1):>10.2f}  {kind}")
    rows.append(f"    {total:>7} {total / max(containers, 1):>10.2f}  (all)")
    return "\n".join(rows)


def print_since(
    counter: CallCounter | None, before: Counter[str] | None, containers: int, title: str
) -> None:
    """Print ``title`` and the calls counted since ``before`` per container (no counter:
    nothing)."""
    if counter is None or before is None:
        return
    calls = counter.snapshot()
    calls.subtract(before)
    print(title)
    print(per_container(+calls, containers))
