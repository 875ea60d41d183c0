"""The SFTP write-behind and read-ahead (lightd.sftp.writebehind) without a daemon:
order, the memory bound, batches, errors answered late, aborts that never close a
descriptor under a write, and reads served ahead."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
from pathlib import Path

import pytest

from lightd.fs import handles
from lightd.fs.beneath import Root
from lightd.sftp.writebehind import Budget, IoThread, ReadAhead, WriteBehind


def temps(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".lightd-tmp-")]


def test_shuffled_and_overlapping_writes_land_in_the_order_sent(tmp_path: Path) -> None:
    block = 64 * 1024
    data = os.urandom(64 * block)
    order = list(range(64))
    random.Random(7).shuffle(order)

    async def run() -> None:
        io = IoThread()
        with Root(tmp_path) as root:
            upload = handles.Upload(root, ("f.bin",), keep=False, exclusive=False)
            # Small batches: the blocks go to the thread in many jobs, in order.
            pipe = WriteBehind(upload, io, Budget(limit=1 << 30), batch_bytes=3 * block)
            # A wrong first version of every block, then the right one: the later write
            # of an offset must win, as it would if each were done before the next.
            for index in order:
                assert pipe.write(b"\xff" * block, index * block) == block
            for index in order:
                assert pipe.write(data[index * block : (index + 1) * block], index * block) == block
            await pipe.drain()
            assert pipe.pending_bytes == 0
            upload.commit()
        io.shutdown()

    asyncio.run(run())
    assert (tmp_path / "f.bin").read_bytes() == data
    assert temps(tmp_path) == []


def test_a_full_queue_answers_a_write_only_when_it_is_done(tmp_path: Path) -> None:
    gate = threading.Event()

    async def run() -> None:
        io = IoThread()
        with Root(tmp_path) as root:
            upload = handles.Upload(root, ("f.bin",), keep=False, exclusive=False)
            budget = Budget(limit=3 * 1024)
            pipe = WriteBehind(upload, io, budget)
            io.submit(gate.wait)  # the I/O thread is busy: nothing is written yet
            assert pipe.write(b"a" * 1024, 0) == 1024
            assert pipe.write(b"b" * 1024, 1024) == 1024
            assert pipe.write(b"c" * 1024, 2048) == 1024
            waiting = pipe.write(b"d" * 1024, 3072)
            assert not isinstance(waiting, int)
            assert budget.queued == 4096
            task = asyncio.ensure_future(waiting)
            await asyncio.sleep(0.05)
            assert not task.done()
            gate.set()
            assert await task == 1024
            # The one thread runs the session's writes in order: all before it are done.
            assert budget.queued == 0
            upload.commit()
        io.shutdown()

    asyncio.run(run())
    assert (
        tmp_path / "f.bin"
    ).read_bytes() == b"a" * 1024 + b"b" * 1024 + b"c" * 1024 + b"d" * 1024


def test_a_failed_write_is_reported_next_and_at_drain(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"old")

    async def run() -> None:
        io = IoThread()
        with Root(tmp_path) as root:
            upload = handles.Upload(root, ("f.bin",), keep=False, exclusive=False)
            pipe = WriteBehind(upload, io, Budget(), batch_bytes=4)
            real = upload.pwritev

            def failing(chunks: list[bytes], offset: int) -> int:
                if offset >= 4:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(chunks, offset)

            upload.pwritev = failing  # type: ignore[method-assign]
            assert pipe.write(b"new!", 0) == 4
            assert pipe.write(b"more", 4) == 4  # answered before it fails
            with pytest.raises(OSError, match="No space"):
                await pipe.drain()
            with pytest.raises(OSError, match="No space"):
                pipe.write(b"again", 8)
            pipe.abort()
            io.shutdown()  # the abort runs in the thread: before the root is closed

    asyncio.run(run())
    assert (tmp_path / "f.bin").read_bytes() == b"old"
    assert temps(tmp_path) == []


def test_writes_wait_for_a_full_batch_or_a_drain(tmp_path: Path) -> None:
    async def run() -> None:
        io = IoThread()
        with Root(tmp_path) as root:
            upload = handles.Upload(root, ("f.bin",), keep=False, exclusive=False)
            calls: list[int] = []
            real = upload.pwritev

            def counted(chunks: list[bytes], offset: int) -> int:
                calls.append(len(chunks))
                return real(chunks, offset)

            upload.pwritev = counted  # type: ignore[method-assign]
            pipe = WriteBehind(upload, io, Budget(), batch_bytes=4096)
            for index in range(6):
                assert pipe.write(bytes([index]) * 1024, index * 1024) == 1024
            await asyncio.sleep(0.05)
            assert calls == [4]  # one batch of four adjacent blocks, one system call
            assert pipe.pending_bytes == 2048  # the rest waits for more, or a drain
            await pipe.drain()
            assert calls == [4, 2]
            upload.commit()
        io.shutdown()

    asyncio.run(run())
    assert (tmp_path / "f.bin").read_bytes() == b"".join(bytes([i]) * 1024 for i in range(6))


def test_abort_mid_pipeline_keeps_the_old_file_and_waits_for_the_running_write(
    tmp_path: Path,
) -> None:
    (tmp_path / "f.bin").write_bytes(b"old")
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    async def run() -> None:
        with Root(tmp_path) as root:
            io = IoThread()
            upload = handles.Upload(root, ("f.bin",), keep=False, exclusive=False)
            pipe = WriteBehind(upload, io, Budget(), batch_bytes=1024)
            real = upload.pwritev

            def slow(chunks: list[bytes], offset: int) -> int:
                started.set()
                release.wait(5)
                written.append(offset)
                return real(chunks, offset)  # the descriptor is still open here

            upload.pwritev = slow  # type: ignore[method-assign]
            for index in range(10):
                pipe.write(b"x" * 1024, index * 1024)
            await asyncio.to_thread(started.wait, 5)
            pipe.abort()  # the session ends while the first write runs
            io.shutdown(wait=False)
            release.set()
            await asyncio.to_thread(io.shutdown, True)
            assert upload.fd == -1

    asyncio.run(run())
    assert written == [0]  # the queued writes never ran
    assert (tmp_path / "f.bin").read_bytes() == b"old"
    assert temps(tmp_path) == []


def test_read_ahead_serves_sequential_and_random_reads(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    (tmp_path / "f.bin").write_bytes(data)

    async def run() -> None:
        fd = os.open(tmp_path / "f.bin", os.O_RDONLY)
        io = IoThread()
        budget = Budget(limit=256 * 1024)
        ahead = ReadAhead(fd, io, budget, len(data))
        block = 32 * 1024

        async def get(offset: int, size: int) -> bytes:
            got = ahead.read(offset, size)
            return got if isinstance(got, bytes) else await got

        back = b"".join([await get(i * block, block) for i in range(32)])
        assert back == data
        assert 0 <= budget.queued <= budget.limit  # bounded, nothing past the end
        assert await get(5000, 100) == data[5000:5100]  # elsewhere: what was ahead is dropped
        assert await get(len(data), block) == b""
        ahead.close()
        await asyncio.to_thread(io.shutdown, True)
        assert budget.queued == 0
        with pytest.raises(OSError):
            os.fstat(fd)  # closed by the I/O thread

    asyncio.run(run())
