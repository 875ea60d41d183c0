"""Write-behind and read-ahead for SFTP: the disk I/O of a session in its own thread.

:class:`IoThread` is that thread. Waking a sleeping thread and waking the event loop
back cost more here than the ``pwrite`` of a 255 KiB block (a cross-core wake-up on
this kind of VM: about 70 us each way, measured with py-spy and cProfile), so work is
handed over in batches: :class:`WriteBehind` gives the thread up to
:data:`WRITE_BATCH_BYTES` of writes at a time (``pwritev``), :class:`ReadAhead` asks
for several blocks in one job, the thread is woken only when it sleeps, and the loop
is woken once for all the jobs finished meanwhile.

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
- writes are collected until :data:`WRITE_BATCH_BYTES` (or until something needs them
  done: :meth:`drain`, a full budget), then handed to the thread as one job; nothing of
  an upload is visible before its close anyway (a temp entry), so the delay shows
  nowhere;
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

import _thread
import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lightd.fs import handles

WRITE_BEHIND_BYTES = 4 * 1024 * 1024
WRITE_BATCH_BYTES = 1024 * 1024
MAX_IOV = 512  # blocks in one pwritev (the kernel takes up to IOV_MAX, 1024)


@dataclass
class Budget:
    """Bytes queued for one session's I/O thread, over all its handles."""

    limit: int = WRITE_BEHIND_BYTES
    queued: int = 0


class _Job:
    __slots__ = ("args", "error", "fn", "future", "result")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any] | concurrent.futures.Future[Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


class IoThread:
    """One session's I/O thread: jobs run one at a time, in the order they came.

    :meth:`run` (event loop only) answers with an asyncio future; :meth:`submit` with a
    ``concurrent.futures`` one, like an executor's. A job whose asyncio future was
    cancelled before it started is skipped. :meth:`shutdown` lets the jobs queued so far
    run, then ends the thread.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._jobs: deque[_Job] = deque()
        self._done: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._sleeping = False
        self._settling = False
        self._stopping = False
        self._ended = threading.Event()
        # Not threading.Thread.start(), which waits until the new thread runs: on a
        # loaded machine that held the event loop for up to 14 ms at every login.
        _thread.start_new_thread(self._main, ())

    def _queue(self, job: _Job) -> None:
        with self._lock:
            if self._stopping:
                raise RuntimeError("the I/O thread is shut down")
            self._jobs.append(job)
            if self._sleeping:
                self._work.notify()

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue(_Job(fn, args, future))
        return future

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue(_Job(fn, args, future))
        return future

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._stopping = True
            self._work.notify()
        if wait:
            self._ended.wait()

    def _main(self) -> None:
        try:
            self._serve()
        finally:
            self._ended.set()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    if self._stopping:
                        return
                    self._sleeping = True
                    self._work.wait()
                    self._sleeping = False
                job = self._jobs.popleft()
            future = job.future
            if isinstance(future, concurrent.futures.Future):
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job.fn(*job.args))
                    except BaseException as exc:
                        future.set_exception(exc)
                continue
            if future.done():  # cancelled on the loop before it started
                continue
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:
                job.error = exc
            self._done.append(job)
            with self._lock:
                wake, self._settling = not self._settling, True
            if wake:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            self._settling = False
        while self._done:
            job = self._done.popleft()
            future = job.future
            assert isinstance(future, asyncio.Future)
            if future.done():
                continue
            if job.error is not None:
                future.set_exception(job.error)
            else:
                future.set_result(job.result)


def _write_batch(upload: handles.Upload, batch: list[tuple[bytes, int]]) -> int:
    """The writes of one batch, in order; runs of adjacent blocks in one ``pwritev``."""
    done = 0
    start = 0
    while start < len(batch):
        offset = batch[start][1]
        end = start + 1
        reach = offset + len(batch[start][0])
        while end < len(batch) and end - start < MAX_IOV and batch[end][1] == reach:
            reach += len(batch[end][0])
            end += 1
        done += upload.pwritev([data for data, _ in batch[start:end]], offset)
        start = end
    return done


class WriteBehind:
    """The pending writes of one upload handle (see the module docstring).

    Used from the event loop only: completions come back through :class:`IoThread`'s
    loop futures, so the bookkeeping is never touched by the I/O thread.
    """

    def __init__(
        self,
        upload: handles.Upload,
        io: IoThread,
        budget: Budget,
        *,
        batch_bytes: int = WRITE_BATCH_BYTES,
    ) -> None:
        self.upload = upload
        self._io = io
        self._budget = budget
        self._batch_limit = batch_bytes
        self._batch: list[tuple[bytes, int]] = []
        self._batch_bytes = 0
        # Each batch handed to the thread: its future and its size.
        self._pending: dict[asyncio.Future[int], int] = {}
        self._bytes = 0
        self.error: BaseException | None = None

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, data: bytes, offset: int) -> int | Awaitable[int]:
        """Queue one pwrite; its size at once, or an awaitable when the budget is full."""
        self._check()
        size = len(data)
        self._batch.append((data, offset))
        self._batch_bytes += size
        self._bytes += size
        self._budget.queued += size
        if self._budget.queued > self._budget.limit:
            return self._room(self._dispatch(), size)
        if self._batch_bytes >= self._batch_limit:
            self._dispatch()
        return size

    def _dispatch(self) -> asyncio.Future[int]:
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        future: asyncio.Future[int] = self._io.run(_write_batch, self.upload, batch)
        self._pending[future] = size
        future.add_done_callback(self._done)
        return future

    def _done(self, future: asyncio.Future[int]) -> None:
        size = self._pending.pop(future, 0)
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
        if self._batch:
            self._dispatch()
        while self._pending:
            await asyncio.wait(list(self._pending))
        self._check()

    def abort(self) -> None:
        """Drop what has not started; remove the temp entry after what is running."""
        for future in list(self._pending):
            future.cancel()  # a batch already running finishes; the rest never start
        self._budget.queued -= self._bytes
        self._pending.clear()
        self._batch, self._batch_bytes = [], 0
        self._bytes = 0
        try:
            self._io.submit(self.upload.abort)
        except RuntimeError:  # the thread is shut down already
            self.upload.abort()


def _read_blocks(fd: int, offset: int, size: int, count: int) -> list[bytes]:
    blocks = []
    for index in range(count):
        block = os.pread(fd, size, offset + index * size)
        blocks.append(block)
        if len(block) < size:
            break
    return blocks


class ReadAhead:
    """Sequential reads of one download handle done ahead by the session's I/O thread.

    A read of the block that follows the last one is answered from what the thread
    read meanwhile (at once if it is there). Blocks ahead, of the same size, are asked
    for several in one job: whenever what is read ahead falls to half the session's
    :class:`Budget`, as many as the budget allows, never past the size the file had at
    open. A read elsewhere drops what was read ahead. The event loop never calls
    ``pread``. :meth:`close` drops what has not started and closes the descriptor from
    the I/O thread, after the read that may be running.
    """

    def __init__(self, fd: int, io: IoThread, budget: Budget, size: int) -> None:
        self.fd = fd
        self._io = io
        self._budget = budget
        self._size = size
        # (offset, size) of each block read ahead: the job reading it and its place there.
        self._ahead: dict[tuple[int, int], tuple[asyncio.Future[list[bytes]], int]] = {}
        self._ahead_bytes = 0
        self._next = -1  # where the next block read ahead starts

    def _queue(self, size: int) -> None:
        room = (self._budget.limit - self._budget.queued) // size
        left = -(-(self._size - self._next) // size)  # blocks before the end at open
        count = min(room, left)
        if count <= 0:
            return
        job = self._io.run(_read_blocks, self.fd, self._next, size, count)
        for index in range(count):
            self._ahead[(self._next, size)] = (job, index)
            self._next += size
        self._ahead_bytes += count * size
        self._budget.queued += count * size

    def _take(self, key: tuple[int, int]) -> tuple[asyncio.Future[list[bytes]], int] | None:
        found = self._ahead.pop(key, None)
        if found is None:
            return None
        self._ahead_bytes -= key[1]
        self._budget.queued -= key[1]
        return found

    def _drop(self) -> None:
        # The jobs still run (a block of one may be awaited already): only forgotten.
        self._budget.queued -= self._ahead_bytes
        self._ahead.clear()
        self._ahead_bytes = 0

    def read(self, offset: int, size: int) -> bytes | Awaitable[bytes]:
        """The block at ``offset``: bytes when it is read already, else an awaitable."""
        found = self._take((offset, size))
        if found is None:
            self._drop()
            found = (self._io.run(_read_blocks, self.fd, offset, size, 1), 0)
            self._next = offset + size
        if size > 0 and self._ahead_bytes * 2 <= self._budget.limit:
            self._queue(size)
        job, index = found
        if job.done():
            return _block(job.result(), index)
        return self._wait(job, index)

    async def _wait(self, job: asyncio.Future[list[bytes]], index: int) -> bytes:
        return _block(await job, index)

    def close(self) -> None:
        for job, _ in self._ahead.values():
            job.cancel()  # the reads not started never run
        self._drop()
        try:
            self._io.submit(os.close, self.fd)
        except RuntimeError:  # the thread is shut down already
            os.close(self.fd)


def _block(blocks: list[bytes], index: int) -> bytes:
    return blocks[index] if index < len(blocks) else b""
