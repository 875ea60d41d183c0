"""Write-behind and read-ahead for SFTP: the disk I/O of a session in its own thread.

:class:`ReadAhead` serves sequential reads from blocks the thread read meanwhile (see
its docstring); the rest of this text is about :class:`WriteBehind`.

asyncssh serves a session's requests one after another and awaits each before it reads
the next, so a write that waits for a thread hop stalls the whole pipeline, and a
``pwrite`` done on the event loop blocks it whenever the page cache makes the kernel
wait (dirty-page throttling, writeback of a slow disk). :class:`WriteBehind` answers a
write at once and hands the ``pwrite`` (still :meth:`lightd.fs.handles.Upload.pwrite`:
the temp entry's descriptor, nothing else) to one thread per session, which runs them
in the order they came, so overlapping writes land as the client sent them and the
loop is free for the next request while the kernel copies.

Limits, and what a client sees:
- at most :data:`WRITE_BEHIND_BYTES` per session (all its handles: one :class:`Budget`)
  wait for the thread; a write past that is answered only once it is done, and since
  the one thread runs the session's writes in order, so are all before it: a session
  holds at most that plus one request (asyncssh accepts up to 4 MiB; OpenSSH sends
  255 KiB), and asyncssh reads no further request meanwhile;
- an error of a pwrite answered already (``ENOSPC``, a volume gone) is reported on the
  next write of the handle and on its close, which then does not commit: the temp entry
  is removed and the old file stays (as for a killed session), so nothing partial lands;
- everything else on the handle that looks at its data (read, fstat, append, truncate,
  fsync, close) waits for the pending writes first (:meth:`drain`);
- :meth:`abort` (session ended) drops the writes not started and removes the temp entry
  from the I/O thread, after the write that may be running: the descriptor is never
  closed under a running ``pwrite``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable
from dataclasses import dataclass

from lightd.fs import handles

WRITE_BEHIND_BYTES = 4 * 1024 * 1024


@dataclass
class Budget:
    """Bytes queued for one session's I/O thread, over all its handles."""

    limit: int = WRITE_BEHIND_BYTES
    queued: int = 0


class WriteBehind:
    """The pending writes of one upload handle (see the module docstring).

    Used from the event loop only: completions come back through ``wrap_future``, so
    the bookkeeping is never touched by the I/O thread.
    """

    def __init__(
        self,
        upload: handles.Upload,
        io: concurrent.futures.ThreadPoolExecutor,
        budget: Budget,
    ) -> None:
        self.upload = upload
        self._io = io
        self._budget = budget
        # Each queued write: its future on the loop, the thread's own future, its size.
        self._pending: dict[asyncio.Future[int], tuple[concurrent.futures.Future[int], int]] = {}
        self._bytes = 0
        self.error: BaseException | None = None

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, data: bytes, offset: int) -> int | Awaitable[int]:
        """Queue one pwrite; its size at once, or an awaitable when the queue is full."""
        self._check()
        size = len(data)
        job = self._io.submit(self.upload.pwrite, data, offset)
        future = asyncio.wrap_future(job)
        self._pending[future] = (job, size)
        self._bytes += size
        self._budget.queued += size
        future.add_done_callback(self._done)
        if self._budget.queued > self._budget.limit:
            return self._room(future, size)
        return size

    def _done(self, future: asyncio.Future[int]) -> None:
        _, size = self._pending.pop(future, (None, 0))
        self._bytes -= size
        self._budget.queued -= size
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None and self.error is None:
            self.error = exc

    async def _room(self, future: asyncio.Future[int], size: int) -> int:
        await asyncio.wait([future])
        self._check()
        return size

    async def drain(self) -> None:
        """Wait until every queued write is done; raise the first error one had."""
        while self._pending:
            await asyncio.wait(list(self._pending))
        self._check()

    def abort(self) -> None:
        """Drop what has not started; remove the temp entry after what is running."""
        for future, (job, _) in list(self._pending.items()):
            job.cancel()  # now, not at the loop's next turn: the rest never start
            future.cancel()  # a pwrite already running finishes
        self._budget.queued -= self._bytes
        self._pending.clear()
        self._bytes = 0
        try:
            self._io.submit(self.upload.abort)
        except RuntimeError:  # the executor is shut down already
            self.upload.abort()


class ReadAhead:
    """Sequential reads of one download handle done ahead by the session's I/O thread.

    A read of the block that follows the last one is answered from what the thread
    read meanwhile (at once if it is there); then the next blocks, of the same size,
    are queued while the session's :class:`Budget` allows and not past the size the
    file had at open. A read elsewhere drops what was read ahead. The event loop never
    calls ``pread``. :meth:`close` drops what has not started and closes the
    descriptor from the I/O thread, after the read that may be running.
    """

    def __init__(
        self, fd: int, io: concurrent.futures.ThreadPoolExecutor, budget: Budget, size: int
    ) -> None:
        self.fd = fd
        self._io = io
        self._budget = budget
        self._size = size
        self._ahead: dict[tuple[int, int], tuple[asyncio.Future[bytes], int]] = {}
        self._next = -1  # where the next block read ahead starts

    def _submit(self, offset: int, size: int) -> asyncio.Future[bytes]:
        return asyncio.wrap_future(self._io.submit(os.pread, self.fd, size, offset))

    def _queue(self, offset: int, size: int) -> None:
        future = self._submit(offset, size)
        self._ahead[(offset, size)] = (future, size)
        self._budget.queued += size

    def _take(self, key: tuple[int, int]) -> asyncio.Future[bytes] | None:
        found = self._ahead.pop(key, None)
        if found is None:
            return None
        self._budget.queued -= found[1]
        return found[0]

    def _drop(self) -> None:
        for future, size in self._ahead.values():
            future.cancel()
            self._budget.queued -= size
        self._ahead.clear()

    def read(self, offset: int, size: int) -> bytes | asyncio.Future[bytes]:
        """The block at ``offset``: bytes when it is read already, else a future."""
        future = self._take((offset, size))
        if future is None:
            self._drop()
            future = self._submit(offset, size)
            self._next = offset + size
        if size > 0:
            while self._next < self._size and self._budget.queued + size <= self._budget.limit:
                self._queue(self._next, size)
                self._next += size
        if future.done():
            return future.result()
        return future

    def close(self) -> None:
        self._drop()
        try:
            self._io.submit(os.close, self.fd)
        except RuntimeError:  # the executor is shut down already
            os.close(self.fd)
