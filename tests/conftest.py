"""Shared fixtures: one lightd daemon for the session, fresh ones for restart tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import engine
from tests.support.daemon import DaemonProcess
from tests.support.lab import USED_PREFIXES, Lab, new_prefix

# Test-friendly reconciler timings for every daemon the tests start.
FAST_RECONCILER = {
    "LIGHTD_CONTAINERS__CRASH_BACKOFF_INITIAL_SECONDS": "1",
    "LIGHTD_CONTAINERS__CRASH_BACKOFF_MAX_SECONDS": "4",
    "LIGHTD_CONTAINERS__CRASH_MAX": "3",
    "LIGHTD_CONTAINERS__INSTALL_TIMEOUT_SECONDS": "8",
    "LIGHTD_CONTAINERS__RESYNC_SECONDS": "2",
    # The fan-out test opens 50 watchers on one container (the default allows 30).
    "LIGHTD_WEBSOCKET__MAX_SOCKETS_PER_CONTAINER": "60",
    # Pulls from the tests' own loopback web server (tests/volumes/test_pull.py); other
    # loopback addresses (127.0.0.2) stay refused, so redirects to them can be tried.
    "LIGHTD_VOLUMES__PULL_ALLOW_NETWORKS": '["127.0.0.1/32"]',
    # The shared daemons keep volumes as folders: a limited volume never becomes a mounted
    # image there (the disk-limit tests start their own daemons on each backend, on loop
    # file systems they always detach).
    "LIGHTD_VOLUMES__DISK_BACKEND": "soft",
}


@pytest.fixture(scope="session", autouse=True)
def sweep_test_containers() -> Iterator[None]:
    """After every daemon has stopped: remove any container a test's prefix names."""
    yield
    for prefix in USED_PREFIXES:
        engine.remove_prefixed(prefix)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The shared daemon: tests using it must not depend on each other's state."""
    proc = DaemonProcess(tmp_path_factory.mktemp("shared-daemon"), env=dict(FAST_RECONCILER))
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
    proc = DaemonProcess(tmp_path / "daemon", env=dict(FAST_RECONCILER))
    try:
        yield proc
    finally:
        proc.stop(kill=True)


@pytest.fixture
def lab(daemon: DaemonProcess, api: httpx.Client) -> Iterator[Lab]:
    """Containers, volumes and ports of one test on the shared daemon, removed afterwards."""
    corner = Lab(daemon, api, new_prefix())
    try:
        yield corner
    finally:
        corner.cleanup()
