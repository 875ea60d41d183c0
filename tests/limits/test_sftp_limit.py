"""SFTP writes hold the volume's disk limit: the no-space answer, nothing kept.

On the shared daemon (the soft backend, so lightd's own check is what refuses; the
kernel's ENOSPC under ``image`` maps to the same answer): a volume made with an 8 MiB
limit, a container on it with SFTP credentials; an upload past the limit fails with
``FX_NO_SPACE_ON_FILESYSTEM`` and leaves no file, one within it is kept.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncssh
import httpx
import pytest

from tests.sftp.conftest import issue, session
from tests.support import engine
from tests.support.daemon import DaemonProcess
from tests.support.lab import Lab

MiB = 1024 * 1024
pytestmark = [pytest.mark.docker]


def test_sftp_upload_past_the_limit_is_refused_and_kept_nowhere(
    lab: Lab, api: httpx.Client, daemon: DaemonProcess
) -> None:
    assert daemon.sftp_port, "the shared daemon must run SFTP"
    made = api.post("/volumes", json={"disk_limit": 8 * MiB})
    assert made.status_code == 201, made.text
    volume_id = made.json()["volume_id"]
    path = Path(made.json()["path"])
    internal_id = lab.create("sftpdisk", volume_id=volume_id)
    try:
        issued = issue(api, internal_id)

        async def run() -> tuple[int | None, str, int]:
            async with session(int(issued["port"]), issued["username"], issued["password"]) as sftp:
                async with sftp.open("/small.bin", "wb") as f:
                    await f.write(os.urandom(MiB))
                code, reason = None, ""
                try:
                    async with sftp.open("/big.bin", "wb") as f:
                        for _ in range(12):
                            await f.write(os.urandom(MiB))
                except asyncssh.SFTPError as exc:
                    code, reason = exc.code, exc.reason
                return code, reason, (await sftp.stat("/small.bin")).size or 0

        code, reason, small = asyncio.run(run())
        # SFTP version 3 has no no-space code: asyncssh sends FX_FAILURE with the words.
        assert code in (asyncssh.FX_NO_SPACE_ON_FILESYSTEM, asyncssh.FX_FAILURE)
        assert reason in ("Disk limit exceeded", "No space left"), reason
        assert small == MiB
        assert not (path / "big.bin").exists()
        assert not [name for name in os.listdir(path) if name.startswith(".lightd-tmp-")]
        assert api.get(f"/volumes/{volume_id}").json()["disk_usage"] <= 8 * MiB
    finally:
        api.delete(f"/containers/{internal_id}")
        deadline = time.monotonic() + 30
        while engine.managed_names(internal_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        while (
            api.delete(f"/volumes/{volume_id}").status_code == 409 and time.monotonic() < deadline
        ):
            time.sleep(0.2)
