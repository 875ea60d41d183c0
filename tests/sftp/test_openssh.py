"""Debian's real OpenSSH ``sftp`` client against lightd: the everyday commands, a key
login, and a 100 MiB file both ways compared by hash."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.sftp.conftest import Account, OpenSSH, make_account, session
from tests.support.lab import Lab


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_put_get_ls_rename_rm_mkdir_chmod(account: Account, openssh: OpenSSH) -> None:
    local = openssh.home / "local.txt"
    local.write_bytes(b"hello from openssh\n")
    done = openssh.run(
        account.port,
        account.username,
        "\n".join(
            [
                "mkdir saves",
                "put local.txt saves/world.txt",
                "ls -l saves",
                "rename saves/world.txt saves/renamed.txt",
                "chmod 600 saves/renamed.txt",
                "get saves/renamed.txt back.txt",
                "put local.txt gone.txt",
                "rm gone.txt",
                "ls",
                "",
            ]
        ),
        password=account.password,
    )
    assert done.returncode == 0, done.stderr
    assert "world.txt" in done.stdout
    assert (openssh.home / "back.txt").read_bytes() == b"hello from openssh\n"
    on_disk = account.volume / "saves" / "renamed.txt"
    assert on_disk.read_bytes() == b"hello from openssh\n"
    assert stat.S_IMODE(on_disk.stat().st_mode) == 0o600
    assert not (account.volume / "gone.txt").exists()
    assert not (account.volume / "saves" / "world.txt").exists()
    # Nothing temporary is left behind in the volume.
    assert [p.name for p in account.volume.iterdir() if p.name.startswith(".lightd-tmp-")] == []


def test_public_key_login(lab: Lab, api: httpx.Client, openssh: OpenSSH) -> None:
    key = openssh.home / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (openssh.home / "id_ed25519.pub").read_text().strip()
    acct = make_account(lab, api, "keyed", public_keys=[public])
    assert acct.password is None  # keys only: no password was generated
    (acct.volume / "motd.txt").write_text("welcome\n")
    done = openssh.run(acct.port, acct.username, "get motd.txt\n", key=key)
    assert done.returncode == 0, done.stderr
    assert (openssh.home / "motd.txt").read_text() == "welcome\n"
    # A wrong password gets nowhere (there is none for this user).
    refused = openssh.run(acct.port, acct.username, "ls\n", password="nope")
    assert refused.returncode != 0


def test_wrong_password_is_refused(account: Account, openssh: OpenSSH) -> None:
    done = openssh.run(account.port, account.username, "ls\n", password="wrong-password")
    assert done.returncode != 0
    assert "Permission denied" in done.stderr


@pytest.mark.timeout(240)
def fast_packets(api: httpx.Client) -> tuple[float, float, float, float]:
    """(packets lightd sealed itself, those cut from the channel buffer by its channel,
    bytes of channel data it received in packets it opened itself, SFTP sessions its
    own packet layer served)."""
    names = (
        "lightd_sftp_fast_data_packets",
        "lightd_sftp_fast_channel_packets",
        "lightd_sftp_fast_received_bytes",
        "lightd_sftp_fast_protocol_sessions",
    )
    found = {}
    for line in api.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[name] = float(value)
    return found[names[0]], found[names[1]], found[names[2]], found[names[3]]


@pytest.mark.parametrize(
    "cipher", [None, "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr"]
)
def test_100_mib_file_both_ways(
    account: Account, openssh: OpenSSH, api: httpx.Client, cipher: str | None
) -> None:
    """The client's default cipher (chacha20-poly1305) and the others lightd offers. With
    chacha20-poly1305 and AES-GCM lightd frames and seals the download's data packets
    itself and opens the upload's (lightd.sftp.transport): the counters show those paths
    carried the 100 MiB (the client takes packets of at most 32 KiB), the
    hashes that they did so byte for byte both ways; aes128-ctr stays on asyncssh's
    path. Every session is served by lightd's SFTP packet layer (lightd.sftp.protocol)."""
    big = openssh.home / "big.bin"
    with big.open("wb") as out:
        for _ in range(100):
            out.write(os.urandom(1 << 20))
    before = fast_packets(api)
    args, env = openssh.command(account.port, account.username, password=account.password)
    if cipher is not None:
        args = [args[0], "-c", cipher, *args[1:]]
    done = subprocess.run(
        args,
        input="put big.bin big.bin\nget big.bin back.bin\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=openssh.home,
        timeout=200,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    expected = sha256(big)
    assert sha256(account.volume / "big.bin") == expected
    assert sha256(openssh.home / "back.bin") == expected
    after = fast_packets(api)
    sealed, cut, opened, sessions = (after[i] - before[i] for i in range(4))
    assert sessions == 1  # lightd.sftp.protocol's handler, whatever the cipher
    if cipher is None or "gcm" in cipher:
        assert cut >= 100 * 1024 * 1024 / (32 * 1024), (sealed, cut)
        assert sealed >= cut
        # The upload's data (SFTP requests and their headers) all came that way.
        assert opened >= 100 * 1024 * 1024, opened
    else:
        assert (sealed, cut, opened) == (0, 0, 0)  # aes128-ctr: asyncssh's own path


def test_killed_client_mid_upload_leaves_the_old_file(account: Account, openssh: OpenSSH) -> None:
    import signal
    import time

    (account.volume / "world.dat").write_bytes(b"old world")
    big = openssh.home / "big.bin"
    with big.open("wb") as out:
        for _ in range(200):
            out.write(os.urandom(1 << 20))
    args, env = openssh.command(account.port, account.username, password=account.password)
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=openssh.home,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"put big.bin world.dat\n")
        proc.stdin.flush()

        def temp_growing() -> bool:
            temps = [p for p in account.volume.iterdir() if p.name.startswith(".lightd-tmp-")]
            return any(p.stat().st_size > (4 << 20) for p in temps)

        deadline = time.monotonic() + 30
        while not temp_growing():
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    assert (account.volume / "world.dat").read_bytes() == b"old world"
    deadline = time.monotonic() + 10
    while [p for p in account.volume.iterdir() if p.name.startswith(".lightd-tmp-")]:
        assert time.monotonic() < deadline, "the temp entry was not removed"
        time.sleep(0.05)


def put_and_get(
    openssh: OpenSSH, account: Account, name: str, data: bytes, *options: str
) -> subprocess.CompletedProcess[str]:
    """``put`` then ``get`` of ``name`` (holding ``data``) with the OpenSSH client and
    ``options`` before its other arguments; the upload and the copy back must equal it."""
    (openssh.home / name).write_bytes(data)
    args, env = openssh.command(account.port, account.username, password=account.password)
    done = subprocess.run(
        [args[0], *options, *args[1:]],
        input=f"put {name} {name}\nget {name} back-{name}\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=openssh.home,
        timeout=120,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (account.volume / name).read_bytes() == data
    assert (openssh.home / f"back-{name}").read_bytes() == data
    return done


def test_packet_layer_sends_no_ignore_messages_and_batches_keep_files_whole(
    account: Account, openssh: OpenSSH
) -> None:
    """lightd's asyncssh connection (lightd.sftp.transport): no empty SSH_MSG_IGNORE before
    each packet, and a file of a few write batches plus a partial one lands whole."""
    data = os.urandom(3 * 1024 * 1024 + 12345)
    done = put_and_get(openssh, account, "batches.bin", data, "-vvv")
    assert "Authenticated to" in done.stderr
    assert "Received SSH2_MSG_IGNORE" not in done.stderr


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])
def test_rekeys_mid_transfer_keep_the_fast_paths_byte_for_byte(
    account: Account, api: httpx.Client, cipher: str
) -> None:
    """The asyncssh client renews the keys after every 1 MiB it sends (``rekey_bytes``)
    while 12 MiB go up: lightd's receive path takes each new key (NEWKEYS arrives in the
    middle of the packets it opens, its answers wait for each exchange), and the data
    is the same there and back."""
    import asyncio

    payload = os.urandom(12 * 1024 * 1024)
    before = fast_packets(api)

    async def run() -> bytes:
        async with session(
            account.port,
            account.username,
            account.password,
            encryption_algs=[cipher],
            rekey_bytes=1024 * 1024,
        ) as sftp:
            async with sftp.open("rekeyed.bin", "wb") as out:
                await out.write(payload)
            async with sftp.open("rekeyed.bin", "rb") as back:
                return bytes(await back.read())

    assert asyncio.run(run()) == payload
    assert (account.volume / "rekeyed.bin").read_bytes() == payload
    after = fast_packets(api)
    sealed, _cut, opened, sessions = (after[i] - before[i] for i in range(4))
    assert opened >= len(payload), opened
    assert sealed > 0
    assert sessions == 1


def test_reads_of_many_packets_keep_an_upload_whole(
    account: Account, api: httpx.Client, openssh: OpenSSH
) -> None:
    """lightd reads up to ``transport.RECV_BYTES`` from the socket at once: with the
    OpenSSH client's 64 writes of 255 KiB in flight a read holds several packets and
    ends inside one (aes128-gcm, opened by lightd's receive path); the file lands whole
    and comes back the same."""
    data = os.urandom(32 * 1024 * 1024 + 4321)
    before = fast_packets(api)
    put_and_get(openssh, account, "many.bin", data, "-c", "aes128-gcm@openssh.com")
    opened = fast_packets(api)[2] - before[2]
    assert opened >= len(data), opened
