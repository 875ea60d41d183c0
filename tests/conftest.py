"""Shared fixtures: one lightd daemon for the session, fresh ones for restart tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import DaemonProcess


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The shared daemon: tests using it must not depend on each other's state."""
    proc = DaemonProcess(tmp_path_factory.mktemp("shared-daemon"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


@pytest.fixture
def fresh_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon of this test alone (not started: the test starts it, maybe with a config)."""
    proc = DaemonProcess(tmp_path / "daemon")
    try:
        yield proc
    finally:
        proc.stop(kill=True)
