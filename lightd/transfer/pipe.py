"""The transfer's data path between worker threads and the event loop, both directions.

:class:`Outflow` (source): tar streams are packed and compressed in worker threads
(one per stream), each hashing its own bytes and framing them (:func:`data_header`);
the event loop only takes finished frames of about 1 MiB off a queue, with at most
:data:`DEPTH` in flight per stream (back pressure on the threads), and sends each as
its header then its payload (never joined: the HTTP layer copies the payload once).

:class:`Inflow` (target): a file-like object the event loop feeds with the payloads of
one stream and a worker thread reads (decompressing and unpacking as the data arrives,
so receiving and writing overlap); the reader hashes what it takes. A reader that
failed keeps draining (and hashing) so that a corrupted stream is reported as a
checksum mismatch, not as whatever the damaged bytes did to the unpacker.

This module must not know about HTTP, containers or the archive format.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from lightd.transfer.stream import HEADER, Buffer

DEPTH = 8
WAIT = 0.25


def data_header(size: int, stream: int | None) -> bytes:
    """The header of a ``D`` frame of ``size`` bytes of payload; with several streams
    the payload starts with the stream's index (in the header bytes returned)."""
    if stream is None:
        return HEADER.pack(b"D", size)
    return HEADER.pack(b"D", size + 1) + bytes((stream,))


def run_in_thread(fn: Callable[[], Any], name: str) -> asyncio.Future[Any]:
    """``fn()`` in a new daemon thread; its outcome as a future of the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the event loop
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name=name, daemon=True).start()
    return future


class Cancelled(Exception):
    """The other end of the pipe is gone."""


class Outflow:
    """Frames produced by worker threads, consumed in order of arrival by the loop."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.digests = [hashlib.sha256() for _ in range(streams)]
        self.counts = [0] * streams
        self._room = [threading.Semaphore(DEPTH) for _ in range(streams)]
        self._queue: asyncio.Queue[tuple[int, bytes, bytes] | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._stopped = threading.Event()

    def sink(self, stream: int) -> Callable[[bytes], None]:
        """What the packer of ``stream`` hands its compressed pieces to (in its thread)."""
        index = stream if self.streams > 1 else None
        digest, room = self.digests[stream], self._room[stream]

        def put(piece: bytes) -> None:
            digest.update(piece)
            self.counts[stream] += len(piece)
            while not room.acquire(timeout=WAIT):
                if self._stopped.is_set():
                    raise Cancelled()
            if self._stopped.is_set():
                raise Cancelled()
            self._loop.call_soon_threadsafe(
                self._queue.put_nowait, (stream, data_header(len(piece), index), piece)
            )

        return put

    async def frames(self, producers: list[asyncio.Future[Any]]) -> AsyncIterator[bytes]:
        """The frames until every producer ended (a producer's error is raised here)."""
        remaining = len(producers)

        def ended(_: asyncio.Future[Any]) -> None:
            self._queue.put_nowait(None)

        for producer in producers:
            producer.add_done_callback(ended)
        try:
            while remaining:
                item = await self._queue.get()
                if item is None:
                    remaining -= 1
                    continue
                stream, header, payload = item
                self._room[stream].release()
                yield header
                yield payload
            for producer in producers:
                producer.result()
        finally:
            self._stopped.set()
            for producer in producers:
                if not producer.done():
                    with contextlib.suppress(BaseException):
                        await producer

    def end(self) -> list[dict[str, Any]]:
        return [
            {"sha256": digest.hexdigest(), "bytes": count}
            for digest, count in zip(self.digests, self.counts, strict=True)
        ]


class Inflow:
    """One stream's payloads, put by the loop, taken by a worker thread as they came
    (iterating it: the very buffers put, hashed as they are taken, no copy)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Buffer | None] = queue.Queue(maxsize=DEPTH)
        self._eof = False
        self._aborted = False
        self.digest = hashlib.sha256()
        self.count = 0

    # -- the loop side ------------------------------------------------------------------

    async def put(self, payload: Buffer) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            await asyncio.to_thread(self._queue.put, payload)

    async def put_end(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            await asyncio.to_thread(self._queue.put, None)

    def abort(self) -> None:
        """Make the reader stop (it raises :class:`Cancelled`), never blocking."""
        self._aborted = True
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    # -- the thread side ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Buffer]:
        while not self._eof:
            if self._aborted:
                raise Cancelled()
            item = self._queue.get()
            if self._aborted:
                raise Cancelled()
            if item is None:
                self._eof = True
                return
            self.digest.update(item)
            self.count += len(item)
            yield item

    def drain(self) -> None:
        """Take (and hash) whatever is left, until the end."""
        with contextlib.suppress(Cancelled):
            for _ in self:
                pass
