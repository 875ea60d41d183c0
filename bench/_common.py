"""Helpers shared by the lightd benchmarks (not a benchmark itself, not a test).

Puts the repository root on ``sys.path`` so the scripts can reuse
``tests/support/daemon.py``, and offers: a real lightd process in a temporary folder,
CPU and RSS readings from ``/proc``, free ports, Debian tools installed on demand, a
wait for the Docker engine, and Ctrl-C/SIGTERM turned into KeyboardInterrupt so every
script's ``finally`` cleans up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import docker.errors  # noqa: E402

from tests.support.daemon import VENDOR, DaemonProcess  # noqa: E402

IMAGE = os.environ.get("LIGHTD_TEST_IMAGE", "lightd-test/busybox:latest")
TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
MIB = 1024 * 1024

__all__ = ["CORES", "IMAGE", "MIB", "REPO", "VENDOR", "DaemonProcess"]


def unique_prefix(kind: str) -> str:
    """A name prefix no other process on this machine uses: ``lbench-<kind>-<hex>``."""
    return f"lbench-{kind}-{uuid.uuid4().hex[:6]}"


def interrupt_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C, so ``finally`` blocks clean up in both cases."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads) in seconds, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class CpuMeter:
    """CPU use of a process over a window, as a fraction of one core."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.cpu0 = cpu_seconds(pid)

    def read(self) -> float:
        elapsed = time.monotonic() - self.started
        return (cpu_seconds(self.pid) - self.cpu0) / max(elapsed, 1e-9)


def free_ports(count: int, *, exclude: set[int] | None = None) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (held until all are chosen)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            held.append(probe)
            port = int(probe.getsockname()[1])
            if exclude is None or port not in exclude:
                ports.append(port)
    finally:
        for probe in held:
            probe.close()
    return ports


def need_tool(command: str, package: str) -> str:
    """Path of ``command``; installs Debian's ``package`` as root when missing, else exits."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{command} not found: apt-get install -y {package}", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, check=False)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, check=False)
        found = shutil.which(command)
        if found:
            return found
    raise SystemExit(
        f"{command} is needed for the peer figure: install Debian's {package} "
        f"(apt-get install -y {package}) or run this script as root"
    )


def docker_client(*, timeout: float = 60.0, pool: int = 16) -> docker.DockerClient:
    """A docker-py client, waiting up to ``timeout`` s for the engine (tests restart it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = docker.from_env(timeout=120, max_pool_size=pool)
            client.ping()
            return client
        except (docker.errors.DockerException, OSError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"the Docker engine does not answer: {exc}") from exc
            time.sleep(1)


def ensure_image(client: docker.DockerClient) -> None:
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        build = REPO / "tests" / "images" / "build.sh"
        print(f"{IMAGE} missing: running {build}", file=sys.stderr)
        subprocess.run(["bash", str(build)], check=True)


def remove_named(client: docker.DockerClient, prefix: str, *, patience: float = 90.0) -> int:
    """Force-remove every container whose name starts with ``prefix``; returns how many.

    Other sessions restart dockerd now and then: an unreachable engine is waited for
    (up to ``patience`` seconds) rather than leaving containers behind.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            removed = 0
            for entry in client.api.containers(all=True, filters={"name": prefix}):
                name = str(entry["Names"][0]).lstrip("/")
                if name.startswith(prefix):
                    with suppress(docker.errors.NotFound):
                        client.api.remove_container(entry["Id"], force=True, v=True)
                        removed += 1
            return removed
        except (docker.errors.DockerException, OSError) as exc:
            if time.monotonic() > deadline:
                print(f"could not remove {prefix}* containers: {exc}", file=sys.stderr)
                return 0
            time.sleep(1)


def count_named(client: docker.DockerClient, prefix: str) -> int:
    """Containers whose name starts with ``prefix`` (-1 while the engine does not answer)."""
    try:
        entries = client.api.containers(all=True, filters={"name": prefix})
    except (docker.errors.DockerException, OSError):
        return -1
    return sum(1 for e in entries if str(e["Names"][0]).lstrip("/").startswith(prefix))


@contextmanager
def lightd_daemon(prefix: str, *, env: dict[str, str] | None = None) -> Iterator[DaemonProcess]:
    """A real ``python -m lightd serve`` in its own temporary folder, ready (``/readyz``)."""
    root = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    daemon = DaemonProcess(root, env=env)
    try:
        daemon.start()
        with daemon.client() as api:
            deadline = time.monotonic() + 60
            while api.get("/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("lightd did not become ready in 60 s")
                time.sleep(0.1)
        yield daemon
    finally:
        daemon.stop()
        kept = Path(tempfile.gettempdir()) / f"{prefix}-lightd.log"
        with suppress(OSError):
            shutil.copyfile(daemon.log_path, kept)
            print(f"lightd's log: {kept}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


def delete_containers(
    daemon: DaemonProcess,
    client: docker.DockerClient,
    ids: list[str],
    *,
    name_prefix: str,
    timeout: float = 120.0,
) -> float:
    """DELETE every document, wait until no ``name_prefix`` container remains; seconds taken.

    Whatever is left after ``timeout`` is force-removed on the engine.
    """
    started = time.monotonic()
    if daemon.proc is not None and daemon.proc.poll() is None:
        with daemon.client() as api:
            for internal_id in ids:
                with suppress(Exception):
                    api.delete(f"/containers/{internal_id}")
        deadline = started + timeout
        while time.monotonic() < deadline:
            if count_named(client, name_prefix) == 0:
                return time.monotonic() - started
            time.sleep(0.2)
        print(f"lightd left containers after {timeout:.0f} s; removing them", file=sys.stderr)
    remove_named(client, name_prefix)
    return time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(ours: float, peer: float) -> float:
    return ours / peer if peer else float("inf")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def headers(daemon: DaemonProcess) -> dict[str, Any]:
    return {"Authorization": f"Bearer {daemon.token}", "Accept": VENDOR}


def post_sleepers(
    daemon: DaemonProcess, ids: list[str], *, running: bool, stop_timeout: int | None = None
) -> str:
    """POST one busybox sleeper per id (64 MiB, 0.25 cpu) on one new volume, 8 at a time.

    ``running`` picks the documents' power; returns the volume's id.
    """
    with daemon.client() as api:
        volume = api.post("/volumes")
        assert volume.status_code == 201, volume.text
        volume_id: str = volume.json()["volume_id"]
    body: dict[str, Any] = {
        "image": IMAGE,
        "volume_id": volume_id,
        "startup_command": "exec sleep 100000",
        "limits": {"memory": 64 * MIB, "cpu": 0.25},
        "power": "running" if running else "stopped",
    }
    if stop_timeout is not None:
        body["stop"] = {"timeout_seconds": stop_timeout}

    def one(internal_id: str) -> None:
        with daemon.client() as api:
            answer = api.post("/containers", json={**body, "internal_id": internal_id})
            assert answer.status_code == 200, answer.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, ids))
    return volume_id
