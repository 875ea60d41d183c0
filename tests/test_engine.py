"""The Docker adapter against the real engine, and against an engine that is not there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from lightd.config import DockerSettings
from lightd.engine.docker import DockerEngine
from lightd.errors import EngineNotFound, EngineUnavailable
from tests.support.daemon import DaemonProcess


def test_adapter_pings_real_engine() -> None:
    async def scenario() -> None:
        engine = DockerEngine(DockerSettings(), node_id="test-node")
        try:
            status = await engine.status()
            assert status.reachable is True
            assert status.version
            assert status.api_version
        finally:
            engine.close()

    asyncio.run(scenario())


def test_missing_object_becomes_lightd_error() -> None:
    async def scenario() -> None:
        engine = DockerEngine(DockerSettings(), node_id="test-node")
        try:
            with pytest.raises(EngineNotFound):
                await engine.start("lightd-no-such-container-xyz")
        finally:
            engine.close()

    asyncio.run(scenario())


def test_stopped_engine_is_a_clear_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = DockerEngine(
            DockerSettings(base_url=f"unix://{tmp_path}/docker.sock", timeout_seconds=2),
            node_id="test-node",
        )
        try:
            status = await engine.status()
            assert status.reachable is False
            assert status.error and "unreachable" in status.error
            with pytest.raises(EngineUnavailable):
                await engine.list_managed()
        finally:
            engine.close()

    asyncio.run(scenario())


def test_daemon_serves_without_engine(tmp_path: Path) -> None:
    proc = DaemonProcess(
        tmp_path / "d", env={"LIGHTD_DOCKER__BASE_URL": f"unix://{tmp_path}/none.sock"}
    )
    proc.start()
    try:
        assert httpx.get(f"{proc.base_url}/api/v1/public/ping").status_code == 200
        with proc.client() as api:
            docker = api.get("/system").json()["docker"]
        assert docker["reachable"] is False
        assert "unreachable" in docker["error"]
    finally:
        assert proc.stop() == 0
