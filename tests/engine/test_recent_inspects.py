"""The first look after a start stands in for the next one: real engine.

A start sends no inspect (the reconcile worker does not wait for one). While this node's
event stream is open, the first look after it, the console follower's by id or the
reconciler's by name, is kept and answers the other; a change lightd makes (kill)
is seen at once, and one made behind its back is seen as soon as its event arrives.
Without an open event stream nothing is kept. Engine calls are counted on docker-py's
inspect itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from lightd.config import DockerSettings
from lightd.engine.docker import DockerEngine
from lightd.engine.records import CreateRequest, Role, container_name
from tests.support import engine as test_engine


@pytest.fixture
def inspects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``inspect_container`` docker-py sends to the engine, by its argument."""
    sent: list[str] = []
    real = docker.APIClient.inspect_container

    def counting(self: docker.APIClient, container: str) -> Any:
        sent.append(container)
        return real(self, container)

    monkeypatch.setattr(docker.APIClient, "inspect_container", counting)
    return sent


def request(internal_id: str, volume: Path) -> CreateRequest:
    return test_engine.sleeping_request(internal_id, str(volume), "exec sleep 300")


class Follower:
    """This node's event stream read on a thread (as the controller does)."""

    def __init__(self, engine: DockerEngine) -> None:
        self.stream = engine.events()
        self.actions: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.actions.append(event.action)
        except Exception:  # closed by the test
            return

    def wait_for(self, action: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while action not in self.actions:
            assert time.monotonic() < deadline, f"no {action} event: {self.actions}"
            time.sleep(0.05)

    def close(self) -> None:
        self.stream.close()
        self._thread.join(5)


def test_the_looks_after_a_start_come_from_its_inspect(
    prefix: str, tmp_path: Path, inspects: list[str]
) -> None:
    internal_id = f"{prefix}-mc"
    name = container_name(internal_id, Role.MAIN)

    async def scenario() -> None:
        engine = DockerEngine(DockerSettings(), node_id=f"{prefix}node")
        follower = Follower(engine)
        try:
            container_id = await engine.create(request(internal_id, tmp_path))
            await engine.start(container_id)
            assert inspects == []  # the start does not wait for a look
            follower.wait_for("start")
            seen = await engine.inspect(name)  # the first look: kept
            assert seen is not None and seen.running and seen.id == container_id
            assert inspects == [name]
            output = engine.follow_output(container_id, since=None)
            output.close()
            assert inspects == [name]
            again = await engine.inspect(name)  # its own start event does not make it stale
            assert again is not None and again.running
            assert inspects == [name]

            await engine.kill(container_id)  # lightd's own change: looked at again
            killed = await engine.inspect(container_id)
            assert killed is not None and not killed.running
            assert len(inspects) == 2
            killed_again = await engine.inspect(container_id)  # not a start's look: not kept
            assert killed_again is not None and not killed_again.running
            assert len(inspects) == 3

            follower.actions.clear()
            await engine.start(container_id)
            output = engine.follow_output(container_id, since=None)  # the follower first
            output.close()
            assert len(inspects) == 4
            follower.wait_for("start")
            seen = await engine.inspect(name)  # the reconciler's pass reads the same look
            assert seen is not None and seen.running and seen.id == container_id
            assert len(inspects) == 4
            sent = len(inspects)
            follower.actions.clear()
            outside = docker.from_env()
            try:
                outside.api.kill(container_id)  # behind lightd's back
            finally:
                outside.close()
            follower.wait_for("die")
            behind = await engine.inspect(container_id)
            assert behind is not None and not behind.running
            assert len(inspects) == sent + 1
        finally:
            follower.close()
            engine.close()

    asyncio.run(scenario())


def test_nothing_is_kept_without_an_open_event_stream(
    prefix: str, tmp_path: Path, inspects: list[str]
) -> None:
    internal_id = f"{prefix}-mc"
    name = container_name(internal_id, Role.MAIN)

    async def scenario() -> None:
        engine = DockerEngine(DockerSettings(), node_id=f"{prefix}node")
        try:
            container_id = await engine.create(request(internal_id, tmp_path))
            await engine.start(container_id)
            seen = await engine.inspect(name)
            assert seen is not None and seen.running
            await engine.inspect(name)
            assert len(inspects) == 2  # the first look was not kept: asked again
            follower = Follower(engine)
            follower.close()  # a stream that ended: still nothing kept
            await engine.kill(container_id)
            await engine.start(container_id)
            await engine.inspect(name)
            await engine.inspect(name)
            assert len(inspects) == 4
        finally:
            engine.close()

    asyncio.run(scenario())
