"""Root-only fixtures of the disk-limit tests: file systems on loop images, always detached.

Each fixture makes an image file inside the test's own temp folder, attaches it with
``losetup -f --show`` (the one loop device it then owns), makes the file system, and
mounts it with ``strictatime`` (so any walk of a folder shows in its atime). In its
``finally`` it unmounts whatever is still mounted below its folder (image volumes a
daemon left mounted, deepest first), then the file system, then detaches exactly the
device it attached. It never touches a loop device or a mount it did not make.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists(),
    reason="needs root and loop devices",
)


def tools_present(*names: str) -> bool:
    return all(shutil.which(name) for name in names)


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def mounts_below(folder: Path) -> list[str]:
    """Mount points at or below ``folder`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_below(folder: Path) -> None:
    for point in mounts_below(folder):
        for _ in range(20):
            if subprocess.run(["umount", point], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)  # a container of the test may still be going away
        else:
            subprocess.run(["umount", "-l", point], capture_output=True)


@contextlib.contextmanager
def loop_fs(folder: Path, kind: str, size: str = "512M") -> Iterator[Path]:
    """A ``kind`` (btrfs or ext4) file system on a loop image, mounted at ``folder/mnt``."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{kind}.img"
    mount = folder / "mnt"
    mount.mkdir(exist_ok=True)
    run("truncate", "-s", size, str(image))
    device = run("losetup", "-f", "--show", str(image)).strip()
    try:
        if kind == "btrfs":
            run("mkfs.btrfs", "-q", "-f", device)
        else:
            run("mkfs.ext4", "-q", "-F", device)
        run("mount", "-o", "strictatime", device, str(mount))
        try:
            if kind == "btrfs":
                run("btrfs", "quota", "enable", str(mount))
            yield mount
        finally:
            unmount_below(mount)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


@pytest.fixture
def btrfs_mount(tmp_path: Path) -> Iterator[Path]:
    if not tools_present("mkfs.btrfs", "btrfs", "losetup"):
        pytest.skip("btrfs-progs missing (deploy/ensure-disk-tools.sh installs it)")
    with loop_fs(tmp_path / "btrfs", "btrfs") as mount:
        yield mount


@pytest.fixture
def ext4_mount(tmp_path: Path) -> Iterator[Path]:
    if not tools_present("mkfs.ext4", "losetup"):
        pytest.skip("e2fsprogs missing (deploy/ensure-disk-tools.sh installs it)")
    with loop_fs(tmp_path / "ext4", "ext4") as mount:
        yield mount
