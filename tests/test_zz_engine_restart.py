"""dockerd restarted under a running lightd: no crash storm, everything comes back.

Runs last (file name) because it restarts the machine's Docker engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import engine
from tests.support.daemon import REPO, DaemonProcess, wait_for
from tests.support.lab import Lab, new_prefix

pytestmark = pytest.mark.skipif(
    os.environ.get("LIGHTD_TEST_RESTART_ENGINE") != "1",
    reason="restarts the Docker engine: set LIGHTD_TEST_RESTART_ENGINE=1 (make test does)",
)


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def restart_dockerd() -> None:
    systemd = Path("/run/systemd/system").is_dir() and shutil.which("systemctl")
    if systemd and subprocess.run(["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True)
        return
    pids = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    if not pids:
        pytest.skip("dockerd is not a process this test can restart (remote engine?)")
    subprocess.run(["kill", "-TERM", *pids], check=True)
    wait_for(lambda: not engine_answers(), timeout=60, what="dockerd to stop")
    wait_for(
        lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0,
        timeout=60,
        what="dockerd to exit",
    )
    subprocess.run([str(REPO / "deploy" / "ensure-docker.sh")], check=True)


@pytest.fixture
def own_lab(fresh_daemon: DaemonProcess) -> Iterator[Lab]:
    fresh_daemon.start()
    corner = Lab(fresh_daemon, fresh_daemon.client(), new_prefix())
    try:
        yield corner
    finally:
        wait_for(engine_answers, timeout=90, what="engine back")
        corner.cleanup()
        corner.api.close()


def test_dockerd_restart_is_not_a_crash(own_lab: Lab) -> None:
    cids = [own_lab.create(f"eng{i}") for i in range(2)]
    for cid in cids:
        own_lab.wait_state(cid, "running")
    restart_dockerd()
    for cid in cids:
        state = own_lab.wait(
            cid,
            lambda c: c["state"] == "running" and c["engine_available"],
            what="running again",
            timeout=90,
        )
        assert state["crash_count"] == 0, state
        inspected = engine.inspect(f"lightd-{cid}")
        assert inspected is not None and inspected["State"]["Running"]
    assert httpx.get(f"{own_lab.daemon.base_url}/api/v1/public/ping").status_code == 200
    time.sleep(1)
    for cid in cids:
        assert engine.managed_names(cid) == [f"lightd-{cid}"]
