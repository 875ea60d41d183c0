"""Console lines of a real container, read by a reader forced to fall behind.

The container prints numbered lines in bursts; its engine log rotates every few hundred
lines (a small json-file ``max-size``, set through lightd's own adapter); the reader
sleeps on every chunk it reads, so its backlog grows while the container writes, and the
test ends the engine's stream in the middle. Whatever the container wrote within the
throttle of its own time arrives whole, in order, once.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lightd.config import DockerSettings
from lightd.engine.docker import DockerEngine
from lightd.engine.records import CreateRequest, Resources, Role
from lightd.runtime.console import Batch, ConsoleHub
from tests.support import engine as test_engine

PREFIX = "tconsoleorder"
NUMBERED = re.compile(r"^line-(\d+)$")
END = "end-of-output"


@pytest.fixture
def docker_engine() -> Iterator[DockerEngine]:
    # 16 KiB per file: about 200 lines; 30 files kept, so the engine itself loses nothing
    # while the reader is behind by many files.
    adapter = DockerEngine(
        DockerSettings(log_max_size="16k", log_max_files=30), node_id="test-console-order"
    )
    try:
        yield adapter
    finally:
        adapter.close()
        test_engine.remove_prefixed(PREFIX)


def producer(total: int, burst: int, pause_us: int) -> str:
    """A shell loop printing ``line-0`` .. ``line-<total-1>`` in bursts, then END."""
    return (
        f"i=0; while [ $i -lt {total} ]; do j=0; while [ $j -lt {burst} ]; do "
        f"echo line-$i; i=$((i+1)); j=$((j+1)); done; usleep {pause_us}; done; "
        f"usleep 300000; echo {END}; exec sleep 600"
    )


async def run_console(
    adapter: DockerEngine,
    tmp_path: Path,
    *,
    command: str,
    throttle_lines: int,
    stall_after_chunks: int | None,
    break_stream_after: int | None,
    timeout: float = 120.0,
) -> list[str]:
    """Every console line a watcher of the container receives until END."""
    internal_id = f"{PREFIX}-{secrets.token_hex(3)}"
    volume = tmp_path / internal_id
    volume.mkdir()
    container_id = await adapter.create(
        CreateRequest(
            internal_id=internal_id,
            role=Role.MAIN,
            image=test_engine.TEST_IMAGE,
            command=["sh", "-c", command],
            entrypoint=None,
            volume_path=str(volume),
            mounts={},
            extra_binds={},
            ports=[],
            environment={},
            resources=Resources(memory=0, memory_swap=-1, nano_cpus=0, pids_limit=64),
            spec_hash=None,
            stdin=False,
        )
    )
    received: list[str] = []
    done = asyncio.Event()

    def sink(batch: Batch) -> None:
        received.extend(batch.lines)
        if END in batch.lines:
            done.set()

    hub = ConsoleHub(
        adapter,
        throttle_lines=throttle_lines,
        throttle_window_seconds=0.1,
        on_match=lambda key, cid: None,
        on_end=lambda key: None,
        before_chunk=None if stall_after_chunks is None else stall(stall_after_chunks),
    )
    hub.bind_loop(asyncio.get_running_loop())
    hub.subscribe(internal_id, sink)
    try:
        await adapter.start(container_id)
        hub.new_run(internal_id, container_id=container_id, since=None, pattern=None)
        if break_stream_after is not None:
            while sum(1 for line in received if NUMBERED.match(line)) < break_stream_after:
                await asyncio.sleep(0.05)
            console = hub.watching(internal_id)
            assert console is not None and console.stream is not None
            console.stream.close()  # the engine's stream ends under the reader
        await asyncio.wait_for(done.wait(), timeout)
        await asyncio.sleep(0.5)  # anything delivered twice would arrive now
        console = hub.watching(internal_id)
        assert console is not None
        assert not console.stopped.is_set(), "the reader gave up when its stream ended"
    finally:
        hub.stop_all()
        await adapter.remove(container_id)
    return received


def stall(after: int, seconds: float = 1.0) -> Callable[[], None]:
    """A reader hook: read ``after`` chunks, sleep once, then read as fast as it can."""
    chunks = 0

    def hook() -> None:
        nonlocal chunks
        chunks += 1
        if chunks == after:
            time.sleep(seconds)

    return hook


def numbers(lines: list[str]) -> list[int]:
    found = []
    for line in lines:
        match = NUMBERED.match(line)
        if match:
            found.append(int(match.group(1)))
    return found


def test_backlog_of_a_late_reader_arrives_whole_in_order_across_rotations(
    docker_engine: DockerEngine, tmp_path: Path
) -> None:
    # 100 lines every 50 ms: about 200 lines per 100 ms window of the container's time,
    # under the throttle's 300. The reader stalls for a second, then reads its backlog
    # of some 2000 lines at once (a throttle on read time would drop most of them).
    total = 3000
    received = asyncio.run(
        run_console(
            docker_engine,
            tmp_path,
            command=producer(total, burst=100, pause_us=50_000),
            throttle_lines=300,
            stall_after_chunks=300,
            break_stream_after=1200,
        )
    )
    assert not any("too fast" in line for line in received), "throttled a backlog"
    assert numbers(received) == list(range(total))


def test_a_container_over_the_limit_in_its_own_time_is_throttled_in_order(
    docker_engine: DockerEngine, tmp_path: Path
) -> None:
    # 1000 lines at once, then a pause: over the 100 lines per window (200 in a burst).
    total = 4000
    received = asyncio.run(
        run_console(
            docker_engine,
            tmp_path,
            command=producer(total, burst=1000, pause_us=300_000),
            throttle_lines=100,
            stall_after_chunks=None,
            break_stream_after=None,
            # END comes one line after the last flood: it used to be lost when the
            # engine's own follow stream stalled at a rotation (Docker 20.10).
            timeout=30.0,
        )
    )
    seen = numbers(received)
    assert seen and max(seen) >= total - 1000, "the reader stopped before the last flood"
    assert len(seen) < total, "nothing was throttled"
    assert seen == sorted(set(seen)), "out of order or repeated"
    notices = [line for line in received if "too fast" in line]
    # One notice per flood: each burst drains the bucket, each pause refills it.
    assert 1 <= len(notices) <= total // 1000
