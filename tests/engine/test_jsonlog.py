"""Following a json-file log across rotations: a synthetic writer that rotates the way
the engine does (rename chain, new file), and a real container flooding its output
through a tiny ``max-size``, read with lightd's engine adapter."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from lightd.config import DockerSettings
from lightd.engine.docker import DockerEngine
from lightd.engine.jsonlog import JsonLogFollower, Process, time_ns
from tests.support import engine as test_engine

PREFIX = "tjsonlog"


def stamp(n: int) -> str:
    # Real engine stamps trim trailing zeros of the fraction; keep one varied digit.
    return f"2026-12-02T05:00:{n // 1000:02d}.{n % 1000:03d}00{n % 7}Z"


class RotatingLog:
    """Writes entries like the engine's json-file driver and rotates like it does."""

    def __init__(self, path: Path, max_files: int) -> None:
        self.path = path
        self.max_files = max_files
        self.handle = path.open("ab")

    def write(self, n: int, text: str | None = None, stream: str = "stdout") -> None:
        entry = {"log": f"line-{n}\n" if text is None else text, "stream": stream, "time": stamp(n)}
        self.handle.write(orjson.dumps(entry) + b"\n")
        self.handle.flush()

    def rotate(self) -> None:
        self.handle.close()
        base = str(self.path)
        for index in range(self.max_files - 1, 1, -1):
            if os.path.exists(f"{base}.{index - 1}"):
                os.replace(f"{base}.{index - 1}", f"{base}.{index}")
        os.replace(base, f"{base}.1")
        self.handle = self.path.open("ab")

    def close(self) -> None:
        self.handle.close()


def follow(
    path: Path, since_ns: int = 0, max_files: int = 30
) -> tuple[JsonLogFollower, list[bytes]]:
    follower = JsonLogFollower(
        str(path),
        process=Process.of(os.getpid()) or pytest.fail("no /proc"),
        since_ns=since_ns,
        max_files=max_files,
    )
    got: list[bytes] = []

    def run() -> None:
        for chunk in follower:
            got.append(chunk)

    threading.Thread(target=run, daemon=True).start()
    return follower, got


def texts(chunks: list[bytes]) -> list[str]:
    return [line.split(b" ", 1)[1].decode() for line in b"".join(chunks).split(b"\n") if line]


def wait_for(got: list[bytes], count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = texts(list(got))
        if len(seen) >= count:
            return seen
        time.sleep(0.02)
    return texts(list(got))


def test_rotations_between_reads_lose_and_repeat_nothing(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "c-json.log", max_files=30)
    for n in range(50):
        log.write(n)
    log.rotate()
    follower, got = follow(log.path)
    try:
        n = 50
        for burst in range(20):
            for _ in range(37):
                log.write(n)
                n += 1
            log.rotate()
            if burst % 3 == 0:
                # Two rotations before the reader can look: a file it never saw as current.
                for _ in range(5):
                    log.write(n)
                    n += 1
                log.rotate()
        log.write(n)
        seen = wait_for(got, n + 1)
    finally:
        follower.close()
        log.close()
    assert seen == [f"line-{i}" for i in range(n + 1)]


def test_a_reused_inode_is_not_taken_for_a_file_already_read(tmp_path: Path) -> None:
    # Two files kept: each rotation deletes the older one, whose inode the next new file
    # usually gets at once. The follower must not skip that new file as "read".
    log = RotatingLog(tmp_path / "c-json.log", max_files=2)
    follower, got = follow(log.path, max_files=2)
    try:
        n = 0
        for _ in range(60):
            for _ in range(20):
                log.write(n)
                n += 1
            seen = wait_for(got, n)  # the reader keeps up: nothing is deleted unread
            log.rotate()
        log.write(n)
        seen = wait_for(got, n + 1)
    finally:
        follower.close()
        log.close()
    assert seen == [f"line-{i}" for i in range(n + 1)]


def test_since_skips_older_files_and_lines(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "c-json.log", max_files=5)
    for n in range(30_000):
        log.write(n)
        if n % 9000 == 8999:
            log.rotate()
    follower, got = follow(log.path, since_ns=time_ns(stamp(20_000)), max_files=5)
    try:
        seen = wait_for(got, 10_000)
    finally:
        follower.close()
        log.close()
    assert seen == [f"line-{i}" for i in range(20_000, 30_000)]


def test_parts_of_a_long_line_arrive_as_one_line(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "c-json.log", max_files=3)
    log.write(0, "a" * 16384)
    log.write(1, "b" * 100, stream="stderr")
    log.write(2, "c" * 10 + "\n")
    log.write(3, "d\n", stream="stderr")
    follower, got = follow(log.path)
    try:
        seen = wait_for(got, 2)
    finally:
        follower.close()
        log.close()
    assert seen == ["a" * 16384 + "c" * 10, "b" * 100 + "d"]


def test_the_follow_ends_when_the_process_is_gone(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "c-json.log", max_files=3)
    log.write(0)
    gone = Process(pid=os.getpid(), start="not-this-one")
    log.close()
    follower = JsonLogFollower(str(log.path), process=gone, since_ns=0)
    assert texts(list(follower)) == ["line-0"]


@pytest.fixture
def docker_engine() -> Iterator[DockerEngine]:
    adapter = DockerEngine(
        DockerSettings(log_max_size="16k", log_max_files=30), node_id="test-jsonlog"
    )
    try:
        yield adapter
    finally:
        adapter.close()
        test_engine.remove_prefixed(PREFIX)


def test_a_flooding_container_is_followed_whole_across_rotations(
    docker_engine: DockerEngine,
) -> None:
    # Floods of 1000 lines through 16 KiB files: the engine's own follow stream of
    # Docker 20.10 drops and repeats lines here (and sometimes stops); the files do not.
    total = 4000
    command = (
        f"i=0; while [ $i -lt {total} ]; do j=0; while [ $j -lt 1000 ]; do echo line-$i; "
        "i=$((i+1)); j=$((j+1)); done; usleep 200000; done; echo end; exec sleep 1"
    )
    name = f"lightd-{PREFIX}-{secrets.token_hex(3)}"
    with test_engine.client() as client:
        container = client.containers.run(
            test_engine.TEST_IMAGE,
            ["sh", "-c", command],
            detach=True,
            name=name,
            labels={"io.lightd.test": "true"},
            log_config={"type": "json-file", "config": {"max-size": "16k", "max-file": "30"}},
        )
        stream = docker_engine.follow_output(container.id, since=None)
        assert isinstance(stream, JsonLogFollower), "lightd could not read the log files"
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.extend(stream), daemon=True)
        reader.start()
        reader.join(60)
        ended = not reader.is_alive()
        stream.close()
        container.remove(force=True)
    assert ended, "the follow did not end with the container"
    assert texts(chunks) == [f"line-{i}" for i in range(total)] + ["end"]


def test_quiet_followers_are_woken_by_one_liveness_thread(tmp_path: Path) -> None:
    """Followers asleep on their folder's watch (nothing written) end when their
    process is gone, woken by the one thread that looks at all sleepers' processes,
    not by a timer of their own."""
    from lightd.engine import jsonlog

    children = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    followers: list[JsonLogFollower] = []
    threads: list[threading.Thread] = []
    try:
        for index, child in enumerate(children):
            (tmp_path / f"c{index}").mkdir()
            log = RotatingLog(tmp_path / f"c{index}" / "c-json.log", max_files=3)
            log.write(0)
            log.close()
            process = Process.of(child.pid)
            assert process is not None
            follower = JsonLogFollower(str(log.path), process=process, since_ns=0)
            followers.append(follower)
            thread = threading.Thread(target=lambda f=follower: list(f), daemon=True)
            thread.start()
            threads.append(thread)
        time.sleep(2.0)  # past the polls: both sleep on their watch
        watchers = [t for t in threading.enumerate() if t.name == "lightd-log-liveness"]
        assert len(watchers) == 1
        children[0].kill()
        children[0].wait()
        threads[0].join(jsonlog.QUIET_SECONDS + 5)
        assert not threads[0].is_alive()  # woken: its process is gone
        assert threads[1].is_alive()  # the other one sleeps on
    finally:
        for follower in followers:
            follower.close()
        for child in children:
            child.kill()
            child.wait()
        for thread in threads:
            thread.join(5)
