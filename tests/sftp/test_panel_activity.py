"""Activity reaches the panel through the outbox; a reinstall closes sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncssh
import httpx
import pytest

from tests.sftp.conftest import make_account, session_of
from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab, new_prefix
from tests.support.panel import Panel


@pytest.fixture
def panel() -> Iterator[Panel]:
    p = Panel()
    try:
        yield p.start()
    finally:
        p.stop()


def test_activity_notifications_reach_the_panel(fresh_daemon: DaemonProcess, panel: Panel) -> None:
    fresh_daemon.extra_env.update(
        {
            "LIGHTD_REMOTE__ENABLED": "true",
            "LIGHTD_REMOTE__URL": panel.url,
            "LIGHTD_REMOTE__TOKEN": "panel-token-for-tests",
            "LIGHTD_REMOTE__RETRY_INITIAL_SECONDS": "0.1",
        }
    )
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        lab = Lab(fresh_daemon, api, new_prefix())
        try:
            acct = make_account(lab, api, "told")

            async def run() -> None:
                async with session_of(acct) as sftp:
                    for _ in range(3):
                        async with sftp.open("/server.properties", "wb") as f:
                            await f.write(b"motd=hi\n")

            asyncio.run(run())

            def told() -> dict[str, dict[str, object]]:
                found = {
                    str(r.body["activity"]): r.body
                    for r in panel.updates(acct.container)
                    if r.body.get("event") == "activity"
                }
                return found if {"sftp.login", "sftp.upload"} <= set(found) else {}

            bodies = wait_for(told, timeout=30, what="activity at the panel")
            upload = bodies["sftp.upload"]
            assert upload["count"] == 3 and upload["path"] == "/server.properties"
            assert upload["user"] == acct.username and upload["ip"] == "127.0.0.1"
        finally:
            lab.cleanup()
            engine.remove_prefixed(lab.prefix)


def test_reinstall_closes_sessions_for_its_duration(lab: Lab, api: httpx.Client) -> None:
    acct = make_account(lab, api, "reinst")
    lab.wait_state(acct.container, "running")

    async def run() -> None:
        async with session_of(acct) as sftp:
            await sftp.listdir("/")
            answer = await asyncio.to_thread(
                api.post,
                f"/containers/{acct.container}/reinstall",
                json={"install_script": "sleep 3"},
            )
            assert answer.status_code in (200, 202), answer.text
            with pytest.raises((asyncssh.Error, OSError)):
                for _ in range(200):
                    await sftp.listdir("/")
                    await asyncio.sleep(0.05)

    asyncio.run(run())
    lab.wait(acct.container, lambda c: c["install_state"] == "ready", what="reinstalled")

    async def again() -> list[str]:
        async with session_of(acct) as sftp:
            return list(await sftp.listdir("/"))

    assert "." in asyncio.run(again())
