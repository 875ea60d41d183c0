"""Benchmark: a volume moved between two lightd daemons beside a raw tar | zstd stream.

Builds a tree in a volume of a source lightd (default about 1 GiB: 10,000 small files and
a few large ones, half random and half text-like, as ``bench/archive.py``), then in the
same run times:

    ``tar -cf - | zstd -1 -T0`` into a loopback TCP socket, ``zstd -d | tar -xf -`` out of
    it (the nc-style peer; Python only relays the socket)
    vs a non-live transfer of a stopped container with that volume, from
    ``POST /containers/<id>/transfer`` to ``completed`` (target: at least 0.8x of the
    peer's throughput)

and then the downtime of a live transfer of a running server (the container prints a
tick every 50 ms; downtime is from the source's last tick to the target's first; target:
under 5 s plus the container's start time). The peer's copy is removed after the
non-live transfer, not between the two (see ``main``). Its copy is flushed to disk
(``sync``) after its timing and before lightd's starts, outside both: lightd's target
flushes the copy it received before it answers ready (``syncfs`` of the volume's file
system, which is the peer's too here), and must not be charged for the peer's
gigabyte of dirty pages. The peer itself flushes nothing (as the issue defines it). The
CPU seconds of the peer's tools (``tar`` and ``zstd`` on each side) are printed beside
lightd's daemons'. Needs tar and zstd; uses the local test image
(``tests/images/build.sh``). Exits 0 whatever the figures. Not a test.

    .venv/bin/python bench/transfer.py [--size-mb 1024] [--small-files 10000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import interrupt_on_sigterm, verdict
from bench.archive import build_tree
from tests.support import engine
from tests.support.daemon import DaemonProcess

MIB = 1024 * 1024
PREFIX = f"lbench-transfer-{uuid.uuid4().hex[:6]}"


CPU = tuple[float, float]  # user, system seconds


def reap(proc: subprocess.Popen[bytes]) -> CPU:
    """Wait for ``proc`` (a shell pipeline); the CPU seconds it and its children used."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime, usage.ru_stime


def peer_stream(source: Path, target: Path) -> tuple[float, CPU, CPU]:
    """Seconds for ``tar | zstd`` through a loopback socket into ``zstd -d | tar -x``,
    and the CPU seconds of the sending tools and of the receiving ones."""
    target.mkdir(parents=True)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()
    cpu: dict[str, CPU] = {}

    def receive() -> None:
        conn, _ = listener.accept()
        unpack = subprocess.Popen(
            ["sh", "-c", f"zstd -d -q | tar -xf - -C '{target}'"], stdin=subprocess.PIPE
        )
        assert unpack.stdin is not None
        with conn:
            while chunk := conn.recv(MIB):
                unpack.stdin.write(chunk)
        unpack.stdin.close()
        cpu["unpack"] = reap(unpack)
        done.set()

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    started = time.monotonic()
    pack = subprocess.Popen(
        ["sh", "-c", f"tar -cf - -C '{source}' . | zstd -1 -q -T0"], stdout=subprocess.PIPE
    )
    assert pack.stdout is not None
    with socket.create_connection(("127.0.0.1", port)) as out:
        while chunk := pack.stdout.read(MIB):
            out.sendall(chunk)
    packing = reap(pack)
    done.wait()
    listener.close()
    return time.monotonic() - started, packing, cpu["unpack"]


def container(api: httpx.Client, volume_id: str, port: int, name: str, command: str) -> str:
    internal_id = f"{PREFIX}-{name}"
    body: dict[str, Any] = {
        "internal_id": internal_id,
        "image": engine.TEST_IMAGE,
        "volume_id": volume_id,
        "startup_command": command,
        "limits": {"memory": 64 * MIB, "cpu": 0.5},
        "ports": [{"ip": "127.0.0.1", "port": port, "protocol": "tcp"}],
    }
    answer = api.post("/containers", json=body)
    answer.raise_for_status()
    return internal_id


def wait_state(api: httpx.Client, internal_id: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = api.get(f"/containers/{internal_id}")
        if answer.status_code == 200 and answer.json()["state"] == state:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{internal_id} did not reach {state}")


def move(
    src: httpx.Client, dst: httpx.Client, target_url: str, internal_id: str, *, live: bool
) -> tuple[float, dict[str, Any]]:
    token = dst.post("/transfers/tokens", json={"internal_id": internal_id}).json()["token"]
    started = time.monotonic()
    answer = src.post(
        f"/containers/{internal_id}/transfer",
        json={"target_url": target_url, "token": token, "live": live},
    )
    answer.raise_for_status()
    transfer_id = answer.json()["transfer_id"]
    phases: dict[str, float] = {}
    last = ("", started)
    while True:
        seen = src.get(f"/transfers/{transfer_id}").json()
        now = time.monotonic()
        if seen["phase"] != last[0]:
            if last[0]:
                phases[last[0]] = phases.get(last[0], 0.0) + now - last[1]
            last = (seen["phase"], now)
        if seen["state"] != "running":
            seen["phases"] = phases
            return now - started, seen
        time.sleep(0.05)


def phase_text(outcome: dict[str, Any]) -> str:
    """Seconds per phase as the source showed them (polled every 50 ms)."""
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in outcome["phases"].items())


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def add_port(api: httpx.Client, port: int) -> None:
    api.post("/network/ports", json={"ip": "127.0.0.1", "port": port, "protocol": "tcp"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--skip-live", action="store_true", help="only the non-live transfer")
    args = parser.parse_args()
    for tool in ("tar", "zstd"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (apt-get install {tool})")
            return 0
    interrupt_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    source = DaemonProcess(root / "source", token="lightd_" + "c3" * 16)
    target = DaemonProcess(root / "target", token="lightd_" + "d4" * 16)
    source.log_path = Path(f"/tmp/{PREFIX}-source.log")
    target.log_path = Path(f"/tmp/{PREFIX}-target.log")
    try:
        source.start()
        target.start()
        with source.client() as src, target.client() as dst:
            volume = src.post("/volumes").json()
            top = Path(volume["path"])
            size = build_tree(top, size_mb=args.size_mb, small_files=args.small_files)
            subprocess.run(["sync"], check=False)
            print(f"tree: {size / MIB:.0f} MiB, {args.small_files} small files + 4 large")
            print(f"load average before the peer: {load()}")
            peer, peer_send_cpu, peer_receive_cpu = peer_stream(top, root / "peer-copy")
            # Outside both timings: lightd's syncfs would otherwise write the peer's copy too.
            subprocess.run(["sync"], check=False)
            port = free_port()
            add_port(src, port)
            add_port(dst, port)
            cold = container(src, volume["volume_id"], port, "cold", "exec sleep 100000")
            wait_state(src, cold, "running")
            src.post(f"/containers/{cold}/stop")
            wait_state(src, cold, "offline")
            assert source.proc is not None and target.proc is not None
            pids = (source.proc.pid, target.proc.pid)
            spies = (
                [
                    subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "--native",
                            "--threads",
                            "-r",
                            "50",
                            "--pid",
                            str(pid),
                            "--format",
                            "raw",
                            "-o",
                            f"{os.environ['LIGHTD_BENCH_SPY']}-{side}.txt",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for pid, side in zip(pids, ("source", "target"), strict=True)
                ]
                if os.environ.get("LIGHTD_BENCH_SPY")
                else []
            )
            before = [cpu_seconds(pid) for pid in pids]
            seconds, outcome = move(src, dst, target.base_url, cold, live=False)
            split_cpu = [
                (user - b[0], system - b[1])
                for (user, system), b in zip(
                    (cpu_seconds(pid) for pid in pids), before, strict=True
                )
            ]
            spent = [user + system for user, system in split_cpu]
            for spy in spies:
                spy.send_signal(2)
                spy.wait()
            if outcome["state"] != "completed":
                print(f"transfer failed: {outcome}")
                return 0
            ratio = peer / seconds
            print(
                f"non-live transfer   lightd {seconds:6.2f} s ({size / MIB / seconds:5.0f} MiB/s)"
                f"   tar|zstd|socket {peer:6.2f} s ({size / MIB / peer:5.0f} MiB/s)"
                f"   throughput {ratio:.2f}x (target >= 0.8: {verdict(ratio >= 0.8)})"
            )
            print(f"  phases: {phase_text(outcome)}")
            gib = size / (1024 * MIB)
            print(
                f"  CPU: source {spent[0]:.2f} s ({spent[0] / gib:.2f} s/GiB), target "
                f"{spent[1]:.2f} s ({spent[1] / gib:.2f} s/GiB); of which system: source "
                f"{split_cpu[0][1]:.2f} s, target {split_cpu[1][1]:.2f} s; load average {load()}"
            )
            print(
                f"  peer CPU: tar|zstd {sum(peer_send_cpu) / gib:.2f} s/GiB, zstd -d|tar -x "
                f"{sum(peer_receive_cpu) / gib:.2f} s/GiB; of which system: "
                f"{peer_send_cpu[1]:.2f} s, {peer_receive_cpu[1]:.2f} s"
            )
            # Removed only now: right after deleting 10,000 files, creating as many on the
            # same file system costs several seconds more (ext4 without a journal skips
            # inodes freed in the last 30 s, scanning past each of them per create), which
            # the peer, run first, never pays.
            shutil.rmtree(root / "peer-copy", ignore_errors=True)
            dst.delete(f"/containers/{cold}")
            if args.skip_live:
                return 0
            wait_gone = time.monotonic() + 60
            while engine.managed_names(cold) and time.monotonic() < wait_gone:
                time.sleep(0.2)
            # Live: a running server that ticks (host uptime, 10 ms steps); downtime = the
            # largest gap between ticks, i.e. the source's last one to the target's first.
            live_volume = dst.post("/volumes").json()
            build_tree(Path(live_volume["path"]), size_mb=256, small_files=2000)
            ticking = (
                "echo 'Done'; while true; do "
                "cut -d' ' -f1 /proc/uptime >> ticks.log; sleep 0.05; done"
            )
            hot = container(dst, live_volume["volume_id"], port, "hot", ticking)
            wait_state(dst, hot, "running")
            time.sleep(1)
            seconds, outcome = move(dst, src, source.base_url, hot, live=True)
            if outcome["state"] != "completed":
                print(f"live transfer failed: {outcome}")
                return 0
            ticks = Path(src.get(f"/volumes/{live_volume['volume_id']}").json()["path"])
            wait_state(src, hot, "running")
            time.sleep(1)
            lines = (ticks / "ticks.log").read_text().split()
            gaps = [float(b) - float(a) for a, b in itertools.pairwise(lines)]
            downtime = max(gaps)
            print(
                f"live transfer       total {seconds:6.2f} s   downtime {downtime:5.2f} s "
                f"(last tick on the source to first on the target, start included; "
                f"target < 5 s plus start: {verdict(downtime < 5)})"
            )
            src.delete(f"/containers/{hot}")
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        target.stop()
        source.stop()
        engine.remove_prefixed(PREFIX)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
