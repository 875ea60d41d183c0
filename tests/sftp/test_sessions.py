"""The asyncssh client against lightd: concurrency, revocation, permissions, lockout,
limits, what is refused, and activity on /watch."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

import asyncssh
import httpx
import pytest

from tests.sftp.conftest import Account, connect, issue, make_account, session, session_of
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab
from tests.support.ws import Watcher


def test_eight_concurrent_sessions_on_one_container(account: Account) -> None:
    """The default per-container cap (8) is all usable at once."""

    async def one(index: int) -> bytes:
        async with session_of(account) as sftp:
            name = f"/f{index}.bin"
            data = os.urandom(256 * 1024)
            async with sftp.open(name, "wb") as f:
                await f.write(data)
            async with sftp.open(name, "rb") as f:
                back = await f.read()
            assert back == data
            return bytes(back[:4])

    async def run() -> list[bytes | BaseException]:
        return await asyncio.gather(*(one(i) for i in range(8)), return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, bytes) for r in results), results


def test_sixteen_sessions_across_containers(lab: Lab, api: httpx.Client) -> None:
    """16 concurrent sessions (two containers, eight each), no failure."""
    accounts = [make_account(lab, api, f"c{i}") for i in range(2)]

    async def one(acct: Account, index: int) -> None:
        async with session_of(acct) as sftp:
            data = os.urandom(128 * 1024)
            async with sftp.open(f"/s{index}.bin", "wb") as f:
                await f.write(data)
            assert (await sftp.stat(f"/s{index}.bin")).size == len(data)
            await sftp.listdir("/")

    async def run() -> list[BaseException | None]:
        jobs = [one(acct, i) for acct in accounts for i in range(8)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(run())
    assert results == [None] * 16, results


def test_per_container_cap(account: Account) -> None:
    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(8):
                await stack.enter_async_context(session_of(account))
            with pytest.raises((asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError)):
                async with session_of(account) as extra:
                    await extra.listdir("/")

    asyncio.run(run())


def test_revocation_closes_a_session_mid_transfer(account: Account, api: httpx.Client) -> None:
    (account.volume / "keep.txt").write_bytes(b"old content")

    async def run() -> float:
        async with session_of(account) as sftp:
            f = await sftp.open("/keep.txt", "wb")
            await f.write(b"x" * (1 << 20))
            started = time.monotonic()
            answer = await asyncio.to_thread(
                api.delete, f"/containers/{account.container}/sftp/credentials"
            )
            assert answer.status_code == 200, answer.text
            with pytest.raises((asyncssh.Error, OSError)):
                for _ in range(100):
                    await f.write(b"y" * 65536)
                    await asyncio.sleep(0.02)
            return time.monotonic() - started

    took = asyncio.run(run())
    assert took < 1.5
    # The upload was never committed: the old file stays, no temp entry is left.
    assert (account.volume / "keep.txt").read_bytes() == b"old content"
    wait_for(
        lambda: not [p for p in account.volume.iterdir() if p.name.startswith(".lightd-tmp-")],
        timeout=5,
        what="temp entry removed",
    )
    # The revoked user cannot log in again.
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(_list(account))
    assert api.get(f"/containers/{account.container}/sftp/info").status_code == 404


async def _list(account: Account) -> list[str]:
    async with session_of(account) as sftp:
        return list(await sftp.listdir("/"))


def test_read_only_user_changes_nothing(lab: Lab, api: httpx.Client) -> None:
    acct = make_account(lab, api, "ro", permissions=["read"])
    (acct.volume / "dir").mkdir()
    (acct.volume / "a.txt").write_bytes(b"a")

    async def run() -> None:
        async with session_of(acct) as sftp:
            assert sorted(await sftp.listdir("/")) == [".", "..", "a.txt", "dir"]
            async with sftp.open("/a.txt", "rb") as f:
                assert await f.read() == b"a"
            attempts = [
                sftp.open("/b.txt", "wb"),
                sftp.open("/a.txt", "ab"),
                sftp.mkdir("/new"),
                sftp.rmdir("/dir"),
                sftp.remove("/a.txt"),
                sftp.rename("/a.txt", "/c.txt"),
                sftp.posix_rename("/a.txt", "/c.txt"),
                sftp.chmod("/a.txt", 0o600),
                sftp.symlink("a.txt", "/link"),
                sftp.setstat("/a.txt", asyncssh.SFTPAttrs(size=0)),
            ]
            for attempt in attempts:
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await attempt

    asyncio.run(run())
    assert sorted(p.name for p in acct.volume.iterdir()) == ["a.txt", "dir"]
    assert (acct.volume / "a.txt").read_bytes() == b"a"


def test_write_without_delete_cannot_remove_or_replace(lab: Lab, api: httpx.Client) -> None:
    acct = make_account(lab, api, "wo", permissions=["read", "write"])
    (acct.volume / "a.txt").write_bytes(b"a")
    (acct.volume / "b.txt").write_bytes(b"b")

    async def run() -> None:
        async with session_of(acct) as sftp:
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.remove("/a.txt")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.posix_rename("/a.txt", "/b.txt")
            await sftp.rename("/a.txt", "/c.txt")

    asyncio.run(run())
    assert (acct.volume / "b.txt").read_bytes() == b"b"
    assert (acct.volume / "c.txt").read_bytes() == b"a"


def test_lockout_after_three_failures(
    account: Account, daemon: DaemonProcess, api: httpx.Client
) -> None:
    async def attempt(password: str) -> None:
        async with session(account.port, account.username, password) as sftp:
            await sftp.listdir("/")

    for _ in range(3):
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(attempt("wrong"))
    # Now even the right password is refused for this username from this address.
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(attempt(account.password or ""))
    assert "locked out" in daemon.log()
    metrics = api.get("/metrics").text
    assert any(
        line.startswith("lightd_sftp_lockouts ") and float(line.split()[1]) >= 1
        for line in metrics.splitlines()
    ), metrics
    assert account.password is not None
    assert account.password not in daemon.log()


def test_six_tries_per_connection(account: Account) -> None:
    tries: list[int] = []

    class Many(asyncssh.SSHClient):
        def password_auth_requested(self) -> str:
            tries.append(1)
            return f"wrong-{len(tries)}"

    async def run() -> None:
        # Another username each time would not help: lockout is per (username, address);
        # a fresh user on this connection keeps asking (kbdint is off, passwords only).
        conn = await asyncssh.connect(
            "127.0.0.1",
            account.port,
            username="nobody-here",
            client_factory=Many,
            known_hosts=None,
            agent_path=None,
            preferred_auth="password",
        )
        conn.close()

    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
        asyncio.run(run())
    # Three failures lock "nobody-here" out before six tries; no more than six are taken.
    assert len(tries) <= 7


def test_no_shell_exec_or_forwarding(account: Account) -> None:
    async def run() -> None:
        async with connect(account.port, account.username, account.password) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_process("id")
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_process()  # a shell
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_process("scp -t /")
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", 22)
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)

    asyncio.run(run())


def test_system_info_and_activity_on_watch(
    account: Account, api: httpx.Client, daemon: DaemonProcess
) -> None:
    block = api.get("/system").json()["sftp"]
    assert block["enabled"] is True
    assert block["port"] == daemon.sftp_port
    assert block["host_key_fingerprint"].startswith("SHA256:")
    with Watcher(daemon, f"/watch?token={daemon.token}") as watcher:
        watcher.recv()  # the snapshot

        async def run() -> None:
            async with session_of(account) as sftp:
                for _ in range(5):  # a burst of rewrites of one file: one event
                    async with sftp.open("/burst.txt", "wb") as f:
                        await f.write(b"data")
                await sftp.rename("/burst.txt", "/moved.txt")
                await sftp.remove("/moved.txt")
                info = api.get(f"/containers/{account.container}/sftp/info").json()
                assert info["sessions"] == 1

        asyncio.run(run())
        seen: dict[str, dict[str, object]] = {}

        def activity(event: dict[str, object]) -> bool:
            if event.get("kind") == "activity":
                body = event["object"]
                assert isinstance(body, dict)
                if body.get("server") == account.container:
                    seen[str(body["activity"])] = body
            return {"sftp.login", "sftp.upload", "sftp.rename", "sftp.delete"} <= set(seen)

        watcher.until(activity, timeout=20, what="activity events")
    assert seen["sftp.upload"]["count"] == 5
    assert seen["sftp.upload"]["path"] == "/burst.txt"
    assert seen["sftp.rename"]["to"] == "/moved.txt"
    assert seen["sftp.login"]["user"] == account.username


def test_credentials_routes(lab: Lab, api: httpx.Client) -> None:
    first = make_account(lab, api, "one", username="shared-name")
    assert first.username == "shared-name"
    other = lab.create("two")
    taken = api.post(f"/containers/{other}/sftp/credentials", json={"username": "shared-name"})
    assert taken.status_code == 409
    assert taken.json() == {"error": "Username already in use"}
    bad_key = api.post(
        f"/containers/{other}/sftp/credentials",
        json={"public_keys": ["ssh-ed25519 AAAAnotakey comment"]},
    )
    assert bad_key.status_code == 400
    assert "public_keys[0]" in bad_key.json()["error"]
    bad_perm = api.post(f"/containers/{other}/sftp/credentials", json={"permissions": ["root"]})
    assert bad_perm.status_code == 400
    assert api.post("/containers/nope-nope/sftp/credentials", json={}).status_code == 404
    mine = issue(api, other, password="chosen-password-1")
    assert "password" not in mine  # not generated: not answered
    assert mine["username"] == other
    assert mine["volume_path"] == "/home/container"
    info = api.get(f"/containers/{other}/sftp/info").json()
    assert info["permissions"] == ["read", "write", "delete"]
    assert "password" not in info and "password_hash" not in info
    stored = (lab.daemon.data_dir / "sftp" / "credentials.json").read_text()
    assert "chosen-password-1" not in stored
    assert (
        oct((lab.daemon.data_dir / "sftp" / "credentials.json").stat().st_mode & 0o777) == "0o600"
    )
    assert api.delete(f"/containers/{other}/sftp/credentials").status_code == 200
    assert api.delete(f"/containers/{other}/sftp/credentials").status_code == 404


def test_container_deletion_removes_credentials(lab: Lab, api: httpx.Client) -> None:
    acct = make_account(lab, api, "doomed")

    async def hold() -> None:
        async with session_of(acct) as sftp:
            await sftp.listdir("/")
            assert api.delete(f"/containers/{acct.container}").status_code == 200
            with pytest.raises((asyncssh.Error, OSError)):
                for _ in range(300):
                    await sftp.listdir("/")
                    await asyncio.sleep(0.05)

    asyncio.run(hold())
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(_list(acct))


def test_seventh_key_try_closes_the_connection(account: Account, daemon: DaemonProcess) -> None:
    keys = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(8)]

    async def run() -> None:
        async with asyncssh.connect(
            "127.0.0.1",
            account.port,
            username=account.username,
            client_keys=keys,
            known_hosts=None,
            agent_path=None,
            preferred_auth="publickey",
        ):
            pass

    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
        asyncio.run(run())
    wait_for(
        lambda: "too many authentication attempts" in daemon.log(),
        timeout=5,
        what="the connection closed after six tries",
    )
    # Offered keys are tries, not lockout failures: the password still works.
    assert asyncio.run(_list(account))


def test_extensions_stay_inside(account: Account) -> None:
    """copy-data, ranges, fsync, statvfs and hard links (refused) through the same layer."""
    (account.volume / "src.bin").write_bytes(b"abc" * 1000)

    async def run() -> None:
        async with session_of(account) as sftp:
            await sftp.copy("/src.bin", "/copy.bin", remote_only=True)
            async with sftp.open("/src.bin", "rb") as f:
                ranges = [r async for r in f.request_ranges(0, 3000)]
                assert ranges and ranges[0][0] == 0
            async with sftp.open("/new.bin", "wb") as f:
                await f.write(b"x")
                await f.fsync()
            assert (await sftp.statvfs("/")).namemax == 255
            with pytest.raises(asyncssh.SFTPError):
                await sftp.link("/src.bin", "/hard.bin")

    asyncio.run(run())
    assert (account.volume / "copy.bin").read_bytes() == b"abc" * 1000
    assert not (account.volume / "hard.bin").exists()


def test_pipelined_out_of_order_writes_land_correctly(account: Account) -> None:
    """Many writes in flight at shuffled offsets (answered before the disk has them)."""
    block = 32 * 1024
    data = os.urandom(256 * block)
    order = list(range(256))
    random.Random(15).shuffle(order)

    async def run() -> tuple[bytes, bytes, bytes]:
        async with session_of(account) as sftp:
            async with sftp.open("/ooo.bin", "wb") as f:

                async def put(index: int) -> None:
                    await f.write(data[index * block : (index + 1) * block], index * block)

                await asyncio.gather(*(put(i) for i in order))
            async with sftp.open("/ooo.bin", "r+b") as f:
                # Read, fstat and append on a handle with writes pending see them.
                await f.write(b"HEAD", 0)
                head = await f.read(4, 0)
                size = (await f.stat()).size
            async with sftp.open("/ooo.bin", "ab") as f:
                await f.write(b"tail")
            async with sftp.open("/ooo.bin", "rb") as f:
                back = await f.read()
            assert size == len(data)
            return head, bytes(back[4:-4]), bytes(back[-4:])

    head, middle, tail = asyncio.run(run())
    assert head == b"HEAD"
    assert middle == data[4:]
    assert tail == b"tail"
    assert (account.volume / "ooo.bin").read_bytes() == b"HEAD" + data[4:] + b"tail"


def test_session_dropped_mid_pipeline_leaves_the_old_file(account: Account) -> None:
    (account.volume / "keep.bin").write_bytes(b"old content")

    async def run() -> None:
        conn = await asyncssh.connect(
            "127.0.0.1",
            account.port,
            username=account.username,
            password=account.password,
            known_hosts=None,
            agent_path=None,
            preferred_auth="password",
        )
        sftp = await conn.start_sftp_client()
        f = await sftp.open("/keep.bin", "wb")
        chunk = os.urandom(256 * 1024)
        await asyncio.gather(*(f.write(chunk, i * len(chunk)) for i in range(64)))
        conn.abort()  # no close of the handle: the upload must not be committed
        await conn.wait_closed()

    asyncio.run(run())
    wait_for(
        lambda: not [p for p in account.volume.iterdir() if p.name.startswith(".lightd-tmp-")],
        timeout=5,
        what="temp entry removed",
    )
    assert (account.volume / "keep.bin").read_bytes() == b"old content"
