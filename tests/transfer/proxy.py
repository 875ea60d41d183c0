"""A loopback TCP proxy a test controls: it relays, counts, and cuts on demand.

It runs an asyncio server in its own thread. Every accepted connection is relayed to
``upstream``; :meth:`Proxy.cut_after` makes it close every connection (both sides, at
once, with a reset) once that many bytes went upstream through one connection, as a
dying tunnel does mid-stream. :meth:`Proxy.lose_answer` lets a request whose bytes hold
a marker (a header line, compared without case) reach upstream whole, then resets both
sides instead of relaying the answer: upstream did the work, the client never hears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from types import TracebackType


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cut_at: int | None = None
        self.cuts = 0
        self.largest = 0  # bytes sent upstream by the busiest connection
        self.lose_marker: bytes | None = None
        self.lose_left = 0
        self.lost = 0  # answers lost on purpose
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-proxy", daemon=True)

    def cut_after(self, count: int | None) -> None:
        self.cut_at = count

    def lose_answer(self, marker: bytes, times: int = 1) -> None:
        """Lose the answers to the next ``times`` requests holding ``marker``."""
        self.lose_marker, self.lose_left = marker.lower(), times

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        cut = asyncio.Event()
        sent = 0
        losing = False  # this connection's pending answer is to be lost

        async def upstream() -> None:
            nonlocal sent, losing
            while data := await reader.read(65536):
                marker = self.lose_marker
                if marker is not None and self.lose_left > 0 and marker in data.lower():
                    self.lose_left -= 1
                    losing = True
                if self.cut_at is not None and sent + len(data) > self.cut_at:
                    up_writer.write(data[: max(0, self.cut_at - sent)])
                    sent = self.cut_at
                    cut.set()
                    return
                up_writer.write(data)
                sent += len(data)
                self.largest = max(self.largest, sent)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if losing:
                    self.lost += 1
                    cut.set()
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        waiter = asyncio.ensure_future(cut.wait())
        await asyncio.wait([*tasks, waiter], return_when="FIRST_COMPLETED")
        if cut.is_set():
            self.cuts += 1
        for task in (*tasks, waiter):  # none left pending when the loop closes
            task.cancel()
        for side in (writer, up_writer):
            sock = side.get_extra_info("socket")
            if sock is not None and cut.is_set():
                with contextlib.suppress(OSError):  # a reset, not an orderly end
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            side.close()
            self._writers.discard(side)
