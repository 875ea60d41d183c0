"""Write-behind for SFTP uploads: ``pwrite`` in the session's I/O thread, in order.

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
