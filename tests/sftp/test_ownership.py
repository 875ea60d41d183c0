"""What an SFTP session makes belongs to the container's user (containers.user)."""

from __future__ import annotations

import asyncio
import os

from tests.sftp.conftest import Account, session_of
from tests.support.lab import Lab


def test_uploads_folders_and_links_belong_to_the_user(lab: Lab, account: Account) -> None:
    lab.wait_state(account.container, "running")

    async def scenario() -> None:
        async with session_of(account) as sftp:
            await sftp.mkdir("made")
            async with sftp.open("made/file.txt", "wb") as handle:
                await handle.write(b"hello")
            await sftp.symlink("file.txt", "made/link")

    asyncio.run(scenario())
    for name in ("made", "made/file.txt", "made/link"):
        info = os.lstat(account.volume / name)
        assert (info.st_uid, info.st_gid) == (988, 988), name
