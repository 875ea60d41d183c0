"""Benchmark: lightd's SFTP server beside OpenSSH's own ``sftp-server``, in one run.

Both sides are driven by Debian's OpenSSH ``sftp`` client. The peer is ``sftp -D
/usr/lib/openssh/sftp-server`` (the protocol over a pipe: no SSH daemon, no crypto, the
ceiling); lightd is a real ``lightd serve`` with one container and password
credentials (SSH_ASKPASS), over loopback with ``aes128-gcm@openssh.com`` (``-c``; an
OpenSSH client picks the cipher by *its* order, chacha20 first, so the default is
measured too). Figures:

- upload and download of one file (default 256 MiB), MiB/s, both sides;
- 16 parallel sessions, each uploading then downloading a file (default 16 MiB):
  failures and aggregate MiB/s;
- connect + authenticate + ``ls`` + close over 50 sessions: p50 and p99 in ms;
- per transfer, the CPU per MiB of each side's whole pipeline: the client's processes
  (``sftp`` and ``ssh``; for the peer ``sftp`` and ``sftp-server``) and lightd's, and
  how long lightd's event loop waited for a core (run-queue wait, from schedstat).
  Three busy processes share the 2 cores here (``sftp``, ``ssh``, lightd) against two for
  the peer, so once the cores are busy the throughput ratio follows the ratio of the
  CPU sums (the "CPU-bound ratio" line), not lightd's CPU alone.

Targets: throughput at least 0.5x of sftp-server both ways, connect p99 under 200 ms,
16 sessions with no failure. Prints lightd beside the peer and exits 0 (the figures are
for reading, not a gate). Usage: ``.venv/bin/python bench/sftp.py [--size-mb 256]``.
Not a test; nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    MIB,
    CpuMeter,
    docker_client,
    ensure_image,
    interrupt_on_sigterm,
    lightd_daemon,
    need_tool,
    percentile,
    remove_named,
    unique_prefix,
)

SFTP_SERVER_CANDIDATES = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
PARALLEL = 16
CONNECTS = 50


def sftp_server() -> str:
    for candidate in SFTP_SERVER_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    need_tool("/usr/lib/openssh/sftp-server", "openssh-sftp-server")
    return SFTP_SERVER_CANDIDATES[0]


def make_file(path: Path, size_mb: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size_mb):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


class Side:
    """How to run ``sftp`` against one server (commands on standard input)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], remote: str) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.remote = remote  # the folder remote paths are relative to

    def run(self, commands: str, *, cwd: Path, timeout: float = 600) -> float:
        return self.measured(commands, cwd=cwd, timeout=timeout)[0]

    def measured(self, commands: str, *, cwd: Path, timeout: float = 600) -> tuple[float, float]:
        """(wall seconds, CPU seconds of the client and its children) of one run.

        The CPU comes from this process's reaped children: call it from one thread at
        a time (``parallel`` uses :meth:`run`).
        """
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            self.args,
            input=commands,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd,
            timeout=timeout,
            start_new_session=True,
        )
        took = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"{self.name}: sftp failed ({done.returncode}): {done.stderr[-400:]}"
            )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return took, cpu


def peer_side(server: str, home: Path) -> Side:
    return Side("sftp-server", ["sftp", "-q", "-D", server], dict(os.environ), str(home))


def lightd_side(port: int, username: str, password: str, work: Path, cipher: str | None) -> Side:
    askpass = work / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
    askpass.chmod(0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    env.update({"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"})
    args = [
        "sftp",
        "-q",
        "-P",
        str(port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={work / 'known_hosts'}",
        "-o",
        "BatchMode=no",
        "-o",
        "PreferredAuthentications=password",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "IdentityAgent=none",
    ]
    if cipher:
        args += ["-c", cipher]
    args.append(f"{username}@127.0.0.1")
    return Side(
        "lightd" + (f" ({cipher})" if cipher else " (client default cipher)"), args, env, "/"
    )


def remote_path(side: Side, name: str) -> str:
    return f"{side.remote.rstrip('/')}/{name}"


# Per transfer: lightd's CPU as a share of one core, and the wall time per MiB (ms).
CPU: dict[str, tuple[float, float]] = {}
# Per transfer (both sides): the client's CPU per MiB (ms), with its children.
CLIENT_CPU: dict[str, float] = {}
# Per lightd transfer: its event loop's run-queue wait per MiB (ms).
RUNQ_WAIT: dict[str, float] = {}


def runq_wait_seconds(pid: int) -> float:
    """Time the process's main thread (lightd's event loop) waited for a core, seconds."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def transfer(
    side: Side, local: Path, size_mb: int, work: Path, pid: int | None = None
) -> tuple[float, float]:
    """Upload then download ``local``; MiB/s each way (hash checked).

    With ``pid`` (lightd's), its CPU use during each transfer is kept in ``CPU``. The
    CPU per MiB (all of lightd's threads; the sftp-server peer's is not measured) moves
    less with the machine's load than the wall-clock figures.
    """
    expected = sha256(local)
    back = work / f"back-{os.getpid()}.bin"
    commands = {
        "up": f"put {local} {remote_path(side, 'big.bin')}\n",
        "down": f"get {remote_path(side, 'big.bin')} {back}\n",
    }
    took: dict[str, float] = {}
    for way, command in commands.items():
        label = f"{side.name} {way}"
        meter = CpuMeter(pid) if pid else None
        waited = runq_wait_seconds(pid) if pid else 0.0
        took[way], client_cpu = side.measured(command, cwd=work)
        CLIENT_CPU[label] = client_cpu * 1000 / size_mb
        if meter and pid:
            CPU[label] = (meter.read(), took[way] * 1000 / size_mb)
            RUNQ_WAIT[label] = (runq_wait_seconds(pid) - waited) * 1000 / size_mb
    if sha256(back) != expected:
        raise RuntimeError(f"{side.name}: downloaded file differs")
    back.unlink()
    return size_mb / took["up"], size_mb / took["down"]


def parallel(side: Side, local: Path, size_mb: int, work: Path) -> tuple[int, float]:
    """PARALLEL sessions, each put + get of its own file; (failures, aggregate MiB/s)."""

    def one(index: int) -> None:
        back = work / f"par-{index}.bin"
        side.run(
            f"put {local} {remote_path(side, f'par-{index}.bin')}\n"
            f"get {remote_path(side, f'par-{index}.bin')} {back}\n",
            cwd=work,
        )
        back.unlink()

    started = time.perf_counter()
    failures = 0
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        for outcome in [pool.submit(one, i) for i in range(PARALLEL)]:
            try:
                outcome.result()
            except Exception as exc:
                failures += 1
                print(f"  {side.name}: {exc}", file=sys.stderr)
    took = time.perf_counter() - started
    return failures, 2 * PARALLEL * size_mb / took


def connects(side: Side, work: Path) -> tuple[float, float]:
    times = [side.run("ls\n", cwd=work, timeout=60) * 1000 for _ in range(CONNECTS)]
    return percentile(times, 0.5), percentile(times, 0.99)


def asyncssh_connects(port: int, username: str, password: str) -> tuple[float, float]:
    """The same over the asyncssh client in this process (no client process to start)."""
    import asyncio

    import asyncssh

    async def once() -> float:
        started = time.perf_counter()
        async with (
            asyncssh.connect(
                "127.0.0.1",
                port,
                username=username,
                password=password,
                known_hosts=None,
                agent_path=None,
                preferred_auth="password",
                encryption_algs=["aes128-gcm@openssh.com"],
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            await sftp.listdir("/")
        return (time.perf_counter() - started) * 1000

    async def run() -> list[float]:
        return [await once() for _ in range(CONNECTS)]

    times = asyncio.run(run())
    return percentile(times, 0.5), percentile(times, 0.99)


def row(
    label: str, ours: float, peer: float, unit: str, target: Callable[[float, float], str]
) -> None:
    ratio = ours / peer if peer else float("nan")
    print(
        f"{label:<40} {ours:>10.1f} {peer:>12.1f}  {unit:<6} {ratio:>6.2f}x  {target(ours, peer)}"
    )


def cpu_bound(peer: str, sides: list[str]) -> None:
    """Each transfer's CPU per MiB, client and server, and the ratio the CPU sums give."""
    for way in ("up", "down"):
        peer_cpu = CLIENT_CPU[f"{peer} {way}"]
        print(f"CPU per MiB {way}: sftp-server side (sftp + sftp-server) {peer_cpu:.2f} ms")
        for name in sides:
            label = f"{name} {way}"
            client = CLIENT_CPU[label]
            share, wall = CPU[label]
            server = share * wall
            print(
                f"  {name}: client (sftp + ssh) {client:.2f} + lightd {server:.2f} = "
                f"{client + server:.2f} ms; CPU-bound ratio {peer_cpu / (client + server):.2f}x"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--parallel-mb", type=int, default=16)
    args = parser.parse_args()
    interrupt_on_sigterm()
    need_tool("sftp", "openssh-client")
    server = sftp_server()
    client = docker_client()
    ensure_image(client)
    prefix = unique_prefix("sftp")
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-work-"))
    peer_home = Path(tempfile.mkdtemp(prefix=f"{prefix}-peer-"))
    try:
        big = work / "big.bin"
        small = work / "small.bin"
        make_file(big, args.size_mb)
        make_file(small, args.parallel_mb)
        env = {"LIGHTD_SFTP__MAX_SESSIONS_PER_CONTAINER": str(PARALLEL)}
        with lightd_daemon(prefix, env=env) as daemon, daemon.client() as api:
            volume = api.post("/volumes").json()["volume_id"]
            internal_id = f"{prefix}-c"
            created = api.post(
                "/containers",
                json={
                    "internal_id": internal_id,
                    "image": os.environ.get("LIGHTD_TEST_IMAGE", "lightd-test/busybox:latest"),
                    "volume_id": volume,
                    "startup_command": "exec sleep 100000",
                    "limits": {"memory": 64 * MIB, "cpu": 0.5},
                },
            )
            created.raise_for_status()
            issued = api.post(f"/containers/{internal_id}/sftp/credentials", json={}).json()
            try:
                peer = peer_side(server, peer_home)
                ours = lightd_side(
                    daemon.sftp_port,
                    issued["username"],
                    issued["password"],
                    work,
                    "aes128-gcm@openssh.com",
                )
                default = lightd_side(
                    daemon.sftp_port, issued["username"], issued["password"], work, None
                )
                print(
                    f"file {args.size_mb} MiB; parallel {PARALLEL} x {args.parallel_mb} MiB "
                    f"(put + get); connects {CONNECTS}; cores {os.cpu_count()}; "
                    f"load average {os.getloadavg()[0]:.1f}"
                )
                # One login first: the password's scrypt check (about 0.1 s of CPU, once per
                # 10 minutes per user) is a connect cost, measured below, not throughput.
                ours.run("ls\n", cwd=work)
                peer_up, peer_down = transfer(peer, big, args.size_mb, work)
                assert daemon.proc is not None
                pid = daemon.proc.pid
                up, down = transfer(ours, big, args.size_mb, work, pid)
                dup, ddown = transfer(default, big, args.size_mb, work, pid)
                peer_fail, peer_par = parallel(peer, small, args.parallel_mb, work)
                fail, par = parallel(ours, small, args.parallel_mb, work)
                peer_p50, peer_p99 = connects(peer, work)
                p50, p99 = connects(ours, work)
                a50, a99 = asyncssh_connects(
                    daemon.sftp_port, issued["username"], issued["password"]
                )
                half = lambda o, p: "target >= 0.5x: " + ("met" if o >= 0.5 * p else "NOT met")  # noqa: E731
                print(f"{'':<40} {'lightd':>10} {'sftp-server':>12}")
                row("upload (aes128-gcm)", up, peer_up, "MiB/s", half)
                row("download (aes128-gcm)", down, peer_down, "MiB/s", half)
                row("upload (client default cipher)", dup, peer_up, "MiB/s", half)
                row("download (client default cipher)", ddown, peer_down, "MiB/s", half)
                row(f"{PARALLEL} sessions aggregate", par, peer_par, "MiB/s", lambda o, p: "")
                print(
                    f"{PARALLEL} sessions failures".ljust(41) + f"{fail:>10d} {peer_fail:>12d}"
                    f"  target 0: {'met' if fail == 0 else 'NOT met'}"
                )
                row("OpenSSH client: connect+auth+ls p50", p50, peer_p50, "ms", lambda o, p: "")
                row("asyncssh client: connect+auth+ls p50", a50, peer_p50, "ms", lambda o, p: "")
                row(
                    "asyncssh client: connect+auth+ls p99",
                    a99,
                    peer_p99,
                    "ms",
                    lambda o, p: "target < 200 ms: " + ("met" if o < 200 else "NOT met"),
                )
                row(
                    "OpenSSH client: connect+auth+ls p99",
                    p99,
                    peer_p99,
                    "ms",
                    lambda o, p: "target < 200 ms: " + ("met" if o < 200 else "NOT met"),
                )
                print(f"load average at the end: {os.getloadavg()[0]:.1f}")
                for label, (share, wall) in CPU.items():
                    print(
                        f"lightd CPU during {label}: {share * 100:.0f}% of a core, "
                        f"{share * wall:.2f} ms of CPU per MiB; its event loop waited "
                        f"{RUNQ_WAIT[label]:.2f} ms per MiB for a core"
                    )
                cpu_bound(peer.name, [ours.name, default.name])
            finally:
                with suppress(Exception):
                    api.delete(f"/containers/{internal_id}")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and client.api.containers(
                    all=True, filters={"name": prefix}
                ):
                    time.sleep(0.2)
        remove_named(client, prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(peer_home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
