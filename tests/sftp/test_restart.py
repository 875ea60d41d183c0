"""SFTP across restarts and failures: the host key and credentials persist, a kill -9
mid-upload leaves the old file and no temp entry, bad settings stop the start."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

import asyncssh
import pytest

from tests.sftp.conftest import make_account, session_of
from tests.support.daemon import REPO, DaemonProcess, wait_for
from tests.support.lab import Lab, new_prefix


def test_host_key_and_credentials_survive_a_restart(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        lab = Lab(fresh_daemon, api, new_prefix())
        try:
            acct = make_account(lab, api, "persist")
            first = api.get("/system").json()["sftp"]["host_key_fingerprint"]
            key_file = fresh_daemon.data_dir / "sftp" / "host_ed25519"
            assert key_file.stat().st_mode & 0o777 == 0o600
            fresh_daemon.restart()
            api.base_url = fresh_daemon.base_url  # type: ignore[misc]
            block = api.get("/system").json()["sftp"]
            assert block["host_key_fingerprint"] == first
            acct.port = fresh_daemon.sftp_port
            seen: list[str] = []

            async def run() -> None:
                async with asyncssh.connect(
                    "127.0.0.1",
                    acct.port,
                    username=acct.username,
                    password=acct.password,
                    known_hosts=None,
                    agent_path=None,
                ) as conn:
                    key = conn.get_server_host_key()
                    assert key is not None
                    seen.append(key.get_fingerprint("sha256"))
                    async with conn.start_sftp_client() as sftp:
                        await sftp.listdir("/")

            asyncio.run(run())
            assert seen == [first]
        finally:
            lab.cleanup()


def test_kill_9_mid_upload_leaves_the_old_file(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        lab = Lab(fresh_daemon, api, new_prefix())
        try:
            acct = make_account(lab, api, "killed")
            target = acct.volume / "world.dat"
            target.write_bytes(b"the old world")
            started = threading.Event()
            outcome: list[BaseException | None] = []

            async def upload() -> None:
                async with session_of(acct) as sftp:
                    f = await sftp.open("/world.dat", "wb")
                    for _ in range(4):
                        await f.write(os.urandom(1 << 20))
                    started.set()
                    for _ in range(10_000):
                        await f.write(os.urandom(1 << 16))
                    await f.close()

            def run() -> None:
                try:
                    asyncio.run(upload())
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=run)
            thread.start()
            assert started.wait(30)
            temps = [p for p in acct.volume.iterdir() if p.name.startswith(".lightd-tmp-")]
            assert temps, "the upload goes to a temp entry"
            fresh_daemon.stop(kill=True)
            thread.join(30)
            assert outcome and outcome[0] is not None  # the upload failed
            assert target.read_bytes() == b"the old world"
            fresh_daemon.start()
            api.base_url = fresh_daemon.base_url  # type: ignore[misc]
            assert target.read_bytes() == b"the old world"
            assert not [p for p in acct.volume.iterdir() if p.name.startswith(".lightd-tmp-")]
        finally:
            lab.cleanup()


def _serve(daemon: DaemonProcess, **env: str) -> subprocess.CompletedProcess[str]:
    daemon.root.mkdir(parents=True, exist_ok=True)
    merged = daemon.environment()
    merged.update(env)
    return subprocess.run(
        [sys.executable, "-m", "lightd", "serve"],
        cwd=REPO,
        env=merged,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_taken_port_is_a_config_error(fresh_daemon: DaemonProcess) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        done = _serve(fresh_daemon, LIGHTD_SFTP__PORT=str(port))
    assert done.returncode == 2, done.stderr
    assert f"sftp.port {port} on 127.0.0.1 is already in use" in done.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIGHTD_SFTP__PORT": "70000"}, "sftp.port"),
        ({"LIGHTD_SFTP__HOST": "not an address"}, "sftp.host"),
        ({"LIGHTD_SFTP__MAX_SESSIONS_PER_CONTAINER": "0"}, "sftp.max_sessions_per_container"),
        ({"LIGHTD_SFTP__IDLE_TIMEOUT_SECONDS": "-1"}, "sftp.idle_timeout_seconds"),
    ],
)
def test_bad_settings_are_config_errors(
    fresh_daemon: DaemonProcess, env: dict[str, str], message: str
) -> None:
    done = _serve(fresh_daemon, **env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_disabled_sftp_does_not_listen(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.extra_env["LIGHTD_SFTP__ENABLED"] = "false"
    fresh_daemon.start()
    assert fresh_daemon.sftp_port == 0
    with fresh_daemon.client() as api:
        block = api.get("/system").json()["sftp"]
    assert block["enabled"] is False
    assert block["host_key_fingerprint"] is None


def test_idle_sessions_are_closed(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.extra_env["LIGHTD_SFTP__IDLE_TIMEOUT_SECONDS"] = "1.5"
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        lab = Lab(fresh_daemon, api, new_prefix())
        try:
            acct = make_account(lab, api, "idle")

            async def run() -> float:
                async with session_of(acct) as sftp:
                    await sftp.listdir("/")
                    started = time.monotonic()
                    with pytest.raises((asyncssh.Error, OSError)):
                        await asyncio.sleep(4)
                        await sftp.listdir("/")
                    return time.monotonic() - started

            asyncio.run(run())
            wait_for(lambda: "closed: idle" in fresh_daemon.log(), timeout=5, what="idle close")
        finally:
            lab.cleanup()
