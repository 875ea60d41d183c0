"""Hostile tables: nothing a client sends or a container plants leads outside the volume.

Links planted in the volume point to the host's ``/etc`` and to a sibling volume; every
path argument of every operation gets ``..`` climbing out; names with NUL or over 255
bytes; symlinks created pointing outside. Each must be refused with an SFTP status (the
session survives), and the sibling volume and the host stay untouched.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import httpx
import pytest

from tests.sftp.conftest import Account, make_account, session_of
from tests.support.lab import Lab

Op = Callable[[asyncssh.SFTPClient, str], Awaitable[object]]


async def _read(sftp: asyncssh.SFTPClient, path: str) -> bytes:
    async with sftp.open(path, "rb") as f:
        return bytes(await f.read())


async def _write(sftp: asyncssh.SFTPClient, path: str) -> None:
    async with sftp.open(path, "wb") as f:
        await f.write(b"pwned")


OPS: dict[str, Op] = {
    "stat": lambda s, p: s.stat(p),
    "lstat": lambda s, p: s.lstat(p),
    "open-read": _read,
    "open-write": _write,
    "append": lambda s, p: s.open(p, "ab"),
    "listdir": lambda s, p: s.listdir(p),
    "mkdir": lambda s, p: s.mkdir(p),
    "rmdir": lambda s, p: s.rmdir(p),
    "remove": lambda s, p: s.remove(p),
    "rename-from": lambda s, p: s.rename(p, "/moved"),
    "rename-to": lambda s, p: s.rename("/bait.txt", p),
    "posix-rename-from": lambda s, p: s.posix_rename(p, "/moved"),
    "posix-rename-to": lambda s, p: s.posix_rename("/bait.txt", p),
    "readlink": lambda s, p: s.readlink(p),
    "symlink-at": lambda s, p: s.symlink("bait.txt", p),
    "symlink-to": lambda s, p: s.symlink(p, "/newlink"),
    "chmod": lambda s, p: s.chmod(p, 0o777),
    "truncate": lambda s, p: s.truncate(p, 0),
    "statvfs": lambda s, p: s.statvfs(p),
}


@pytest.fixture
def setup(lab: Lab, api: httpx.Client) -> tuple[Account, Path]:
    acct = make_account(lab, api, "hostile")
    sibling = Path(lab.volume_path(lab.volume()))
    (sibling / "secret.txt").write_bytes(b"sibling secret")
    (acct.volume / "bait.txt").write_bytes(b"bait")
    (acct.volume / "dir").mkdir()
    (acct.volume / "dir" / "inner.txt").write_bytes(b"inner")
    os.symlink("/etc", acct.volume / "etc-link")
    os.symlink(f"../{sibling.name}", acct.volume / "sibling-rel")
    os.symlink(str(sibling), acct.volume / "sibling-abs")
    os.symlink("..", acct.volume / "up")
    os.symlink("dir", acct.volume / "inside")  # allowed: stays in the volume
    return acct, sibling


def _escapes(sibling: Path) -> list[str]:
    name = sibling.name
    return [
        "/etc-link/hostname",
        "etc-link/passwd",
        "/sibling-rel/secret.txt",
        "/sibling-abs/secret.txt",
        "/up/" + name + "/secret.txt",
        "/../" + name + "/secret.txt",
        "../../../../etc/passwd",
        "/dir/../../" + name,
        "/dir/../../../etc",
        "..",
    ]


def test_every_operation_refuses_every_escape(setup: tuple[Account, Path]) -> None:
    acct, sibling = setup
    failures: list[str] = []

    async def run() -> None:
        async with session_of(acct) as sftp:
            for path in _escapes(sibling):
                for name, op in OPS.items():
                    try:
                        result = await op(sftp, path)
                    except asyncssh.SFTPError:
                        continue
                    if name == "symlink-to":
                        # Lexically inside the volume, so the link may be made; following
                        # it must still be refused.
                        with pytest.raises(asyncssh.SFTPError):
                            await _read(sftp, "/newlink")
                        await sftp.remove("/newlink")
                        continue
                    if name in ("statvfs", "lstat", "readlink") and not path.endswith(
                        ("secret.txt", "passwd", "hostname")
                    ):
                        continue  # e.g. lstat of a planted link shows the link itself
                    failures.append(f"{name} {path!r} answered {result!r}")
            # The session is still usable after all of that.
            assert await _read(sftp, "/bait.txt") == b"bait"

    asyncio.run(run())
    assert failures == [], "\n".join(failures)
    assert (sibling / "secret.txt").read_bytes() == b"sibling secret"
    assert sorted(p.name for p in sibling.iterdir()) == ["secret.txt"]
    assert (acct.volume / "bait.txt").read_bytes() == b"bait"


def test_planted_links_are_shown_but_never_followed_out(setup: tuple[Account, Path]) -> None:
    acct, _sibling = setup

    async def run() -> None:
        async with session_of(acct) as sftp:
            names = set(await sftp.listdir("/"))
            assert {"etc-link", "sibling-rel", "sibling-abs", "inside"} <= names
            link = await sftp.lstat("/etc-link")
            assert link.type == asyncssh.FILEXFER_TYPE_SYMLINK
            assert await sftp.readlink("/etc-link") == "/etc"
            for path in ("/etc-link", "/sibling-rel", "/sibling-abs"):
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await sftp.stat(path)
                with pytest.raises(asyncssh.SFTPError):
                    await sftp.listdir(path)
            # A link that stays inside is followed.
            assert await _read(sftp, "/inside/inner.txt") == b"inner"
            assert "inner.txt" in await sftp.listdir("/inside")
            assert await sftp.realpath("/inside") == "/dir"
            assert await sftp.realpath("/../../..") == "/"
            assert await sftp.realpath("/etc-link") == "/etc-link"
            # Removing a planted link removes the link, never its target.
            await sftp.remove("/etc-link")

    asyncio.run(run())
    assert Path("/etc/hostname").exists() or Path("/etc/passwd").exists()
    assert not (acct.volume / "etc-link").is_symlink()


@pytest.mark.parametrize(
    "path",
    [
        "/bad\x00name",
        "/dir/a\x00",
        "/" + "x" * 256,
        "/dir/" + "é" * 128,
        "/.lightd-tmp-0123456789abcdef",
    ],
    ids=["nul", "nul-end", "256-bytes", "256-utf8-bytes", "temp-name"],
)
def test_bad_names_are_refused(setup: tuple[Account, Path], path: str) -> None:
    acct, _ = setup

    async def run() -> None:
        async with session_of(acct) as sftp:
            for name, op in OPS.items():
                if name in ("rename-to", "posix-rename-to", "symlink-to"):
                    continue
                with pytest.raises(asyncssh.SFTPError):
                    await op(sftp, path)
            assert await _read(sftp, "/bait.txt") == b"bait"

    asyncio.run(run())
    assert sorted(p.name for p in acct.volume.iterdir() if not p.is_symlink()) == [
        "bait.txt",
        "dir",
    ]


@pytest.mark.parametrize(
    "target",
    ["/etc", "../etc", "../../etc/passwd", "dir/../../x", "/../x", "up/x"],
)
def test_symlinks_pointing_outside_are_refused(setup: tuple[Account, Path], target: str) -> None:
    acct, _ = setup

    async def run() -> None:
        async with session_of(acct) as sftp:
            if target == "/etc":
                # An absolute target names the session's own root: /etc inside the volume.
                await sftp.symlink(target, "/made")
                assert await sftp.readlink("/made") == "etc"
                return
            # "up/x" is inside as text, but "up" is a link that climbs out: the target is
            # judged through the links already there, as the kernel would follow it.
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.symlink(target, "/made")

    asyncio.run(run())
    made = acct.volume / "made"
    if made.is_symlink():
        assert not os.readlink(made).startswith("/")


def test_link_chains_that_climb_out_are_refused(setup: tuple[Account, Path]) -> None:
    """CVE-2025-4138's pattern over SFTP: ``dot -> .`` then ``dot/dot/../../x``."""
    acct, _ = setup

    async def run() -> None:
        async with session_of(acct) as sftp:
            await sftp.symlink(".", "/dot")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.symlink("dot/dot/../../x", "/escape")
            await sftp.mkdir("/sub")
            await sftp.symlink(".", "/sub/here")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.symlink("here/../../..", "/sub/parent")

    asyncio.run(run())
    assert not (acct.volume / "escape").is_symlink()
    assert not (acct.volume / "sub" / "parent").is_symlink()
    for name in ("dot", "sub/here"):
        (acct.volume / name).unlink()
    (acct.volume / "sub").rmdir()
