"""Disk limits: reading a 100,000-file volume's usage, beside ``du -s``, and a start on it.

For each backend (``btrfs``: the daemon's data folder on a loop-mounted btrfs made here;
``image``: a limited volume as a loop-mounted ext4 image; ``soft``: accounting plus the
background rescan) a real lightd makes a volume with a 2 GiB limit, the script fills it
with ``--files`` small files (written on the host, as a container would), then measures:

- the backend's own usage read in-process (btrfs: the qgroup's sysfs files, and beside
  them the ``btrfs qgroup show`` fallback it replaced; image: ``statvfs``; soft: the
  accountant's memory), median and p95 of 50 (20 for the CLI);
- ``GET /volumes/<id>`` over HTTP (what a panel pays), median and p95 of 50;
- ``du -s`` of the same tree, warm cache (the walk the most used daemon does), median
  of 3;
- the time from ``POST /containers/<id>/start`` to ``running`` on that volume, median of 3.

Target: usage read under 10 ms for btrfs and image whatever the file count. Root only
(loop devices, mount). Loop devices it attaches are detached in ``finally``; it never
touches others. Usage: ``sudo .venv/bin/python bench/disk.py [--files N] [--backend B]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
from _common import (
    IMAGE,
    MIB,
    DaemonProcess,
    docker_client,
    ensure_image,
    headers,
    interrupt_on_sigterm,
    median,
    percentile,
    remove_named,
    unique_prefix,
    verdict,
)

from lightd.fs.limits.base import VolumeRef
from lightd.fs.limits.btrfs import BtrfsBackend
from lightd.fs.limits.image import used_bytes

TARGET_MS = 10.0


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@contextmanager
def btrfs_folder(root: Path) -> Iterator[Path]:
    image = root / "btrfs.img"
    mount = root / "mnt"
    mount.mkdir()
    sh("truncate", "-s", "4G", str(image))
    device = sh("losetup", "-f", "--show", str(image)).strip()
    try:
        sh("mkfs.btrfs", "-q", "-f", device)
        sh("mount", device, str(mount))
        try:
            sh("btrfs", "quota", "enable", str(mount))
            yield mount
        finally:
            unmount_below(mount)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def unmount_below(folder: Path) -> None:
    prefix = str(folder.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True)


def fill(path: Path, files: int) -> float:
    started = time.monotonic()
    per_folder = 1000
    payload = b"x" * 1024
    for index in range(files):
        folder = path / f"d{index // per_folder:03d}"
        if index % per_folder == 0:
            folder.mkdir()
        (folder / f"f{index % per_folder:04d}.txt").write_bytes(payload)
    os.sync()
    return time.monotonic() - started


def timed(fn, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    found = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        found.append((time.perf_counter() - started) * 1000)
    return found


def run_backend(backend: str, files: int, root: Path) -> dict[str, float]:
    prefix = unique_prefix(f"disk-{backend}")
    env = {
        "LIGHTD_VOLUMES__DISK_BACKEND": backend,
        "LIGHTD_VOLUMES__SOFT_RESCAN_SECONDS": "5",
    }
    daemon = DaemonProcess(root / "daemon", env=env)
    client = docker_client()
    ensure_image(client)
    internal_id = f"{prefix}-srv"
    figures: dict[str, float] = {}
    try:
        daemon.start()
        with httpx.Client(base_url=daemon.base_url, headers=headers(daemon), timeout=300) as api:
            made = api.post("/volumes", json={"disk_limit": 2048 * MIB})
            made.raise_for_status()
            volume_id = made.json()["volume_id"]
            path = Path(made.json()["path"])
            figures["fill_s"] = fill(path, files)
            ref = VolumeRef(id=volume_id, path=path)
            if backend == "btrfs":
                direct = BtrfsBackend()
                in_process = timed(lambda: direct.usage(ref), 50)
                figures["cli_ms"] = median(timed(lambda: direct.cli_usage(ref), 20))
            elif backend == "image":
                in_process = timed(lambda: used_bytes(path), 50)
            else:
                # The accountant answers from memory; its walk runs in the background.
                deadline = time.monotonic() + 120
                while api.get(f"/volumes/{volume_id}").json()["disk_usage"] < files * 1024:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                in_process = [float("nan")]
            http = timed(lambda: api.get(f"/volumes/{volume_id}").raise_for_status(), 50)
            usage = api.get(f"/volumes/{volume_id}").json()["disk_usage"]
            sh("du", "-s", str(path))  # warm the cache the way a second walk finds it
            du = timed(lambda: sh("du", "-s", str(path)), 3)
            body = {
                "internal_id": internal_id,
                "image": IMAGE,
                "volume_id": volume_id,
                "startup_command": "exec sleep 1000",
                "limits": {"memory": 64 * MIB},
            }
            api.post("/containers", json=body).raise_for_status()
            starts = []
            for _ in range(3):
                wait_state(api, internal_id, "running")
                api.post(f"/containers/{internal_id}/kill").raise_for_status()
                wait_state(api, internal_id, "offline")
                started = time.perf_counter()
                api.post(f"/containers/{internal_id}/start").raise_for_status()
                wait_state(api, internal_id, "running")
                starts.append((time.perf_counter() - started) * 1000)
            api.delete(f"/containers/{internal_id}")
            figures.update(
                usage_mib=usage / MIB,
                direct_ms=median(in_process),
                direct_p95_ms=percentile(in_process, 0.95),
                http_ms=median(http),
                http_p95_ms=percentile(http, 0.95),
                du_ms=median(du),
                start_ms=median(starts),
            )
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and api.get(f"/containers/{internal_id}").status_code == 200
            ):
                time.sleep(0.2)
            api.delete(f"/volumes/{volume_id}")
    finally:
        with suppress(Exception):
            remove_named(client, prefix)
        daemon.stop()
        client.close()
    return figures


def wait_state(api, internal_id: str, state: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while api.get(f"/containers/{internal_id}").json().get("state") != state:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{internal_id} not {state} after {timeout} s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--backend", choices=["btrfs", "image", "soft", "all"], default="all")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/disk.py needs root (loop devices, mount)", file=sys.stderr)
        return 2
    interrupt_on_sigterm()
    backends = ["btrfs", "image", "soft"] if args.backend == "all" else [args.backend]
    print(f"disk limits, {args.files} files of 1 KiB per volume, load {os.getloadavg()[0]:.2f}")
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="lbench-disk-") as tmp:
            root = Path(tmp)
            try:
                if backend == "btrfs":
                    with btrfs_folder(root) as mount:
                        figures = run_backend(backend, args.files, mount)
                else:
                    figures = run_backend(backend, args.files, root)
            finally:
                unmount_below(root)
        kernel = backend in ("btrfs", "image")
        cli = f" (CLI fallback {figures['cli_ms']:.1f} ms)" if "cli_ms" in figures else ""
        target = (
            f"  target < {TARGET_MS:.0f} ms: {verdict(figures['http_ms'] < TARGET_MS)}"
            if kernel
            else ""
        )
        print(
            f"{backend:>6}: usage {figures['usage_mib']:.1f} MiB; read in-process "
            f"{figures['direct_ms']:.2f} ms (p95 {figures['direct_p95_ms']:.2f}){cli}, "
            f"GET /volumes/<id> {figures['http_ms']:.2f} ms (p95 {figures['http_p95_ms']:.2f}); "
            f"peer du -s {figures['du_ms']:.0f} ms ({figures['du_ms'] / figures['http_ms']:.0f}x); "
            f"container start {figures['start_ms']:.0f} ms; fill {figures['fill_s']:.1f} s{target}"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
