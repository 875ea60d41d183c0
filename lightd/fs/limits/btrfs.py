"""The btrfs backend: each volume is a subvolume with a qgroup limit on referenced bytes.

Usage is the qgroup's referenced bytes (``btrfs qgroup show -f``, O(1) whatever the file
count); a limit change applies at once, also to a container writing now, and the kernel
answers EDQUOT past it. Volume folders made before this backend was chosen are plain
folders: a limit on them is refused (409) rather than faked. It shells out to
btrfs-progs (as wings-rs does) and decides nothing itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from lightd.errors import DiskLimitConflict
from lightd.fs.limits.base import CommandFailed, VolumeRef, run
from lightd.fs.limits.decide import Probe

BTRFS_SUPER_MAGIC = 0x9123683E
BTRFS_FIRST_FREE_OBJECTID = 256  # subvolumes have ids from here; plain folders do not


def parse_qgroup_show(text: str, qgroup: str) -> tuple[int, int | None] | None:
    """(referenced bytes, max referenced or None) of ``qgroup`` in ``qgroup show --raw``."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == qgroup:
            try:
                referenced = int(fields[1])
            except ValueError:
                return None
            limit = None if fields[3] == "none" else int(fields[3])
            return referenced, limit
    return None


def is_subvolume(path: Path) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == BTRFS_FIRST_FREE_OBJECTID
    except OSError:
        return False


def fs_type_magic(path: Path) -> int | None:
    try:
        out = run(["stat", "-f", "-c", "%t", str(path)], timeout=10)
    except CommandFailed:
        return None
    try:
        return int(out.strip(), 16)
    except ValueError:
        return None


def probe(volumes_root: Path) -> Probe:
    where = volumes_root if volumes_root.exists() else volumes_root.parent
    if fs_type_magic(where) != BTRFS_SUPER_MAGIC:
        return Probe("btrfs", False, f"{where} is not on btrfs")
    if shutil.which("btrfs") is None:
        return Probe("btrfs", False, "btrfs-progs is not installed")
    try:
        run(["btrfs", "qgroup", "show", str(where)], timeout=10)
    except CommandFailed as exc:
        return Probe(
            "btrfs",
            False,
            f"qgroups unavailable ({exc.message}); "
            "enable them with 'btrfs quota enable <mount point>'",
        )
    return Probe("btrfs", True, f"{where} is on btrfs with qgroups enabled")


class BtrfsBackend:
    name = "btrfs"
    kernel_enforced = True

    def __init__(self) -> None:
        self._qgroups: dict[Path, str] = {}

    def _qgroup(self, path: Path) -> str:
        found = self._qgroups.get(path)
        if found is None:
            rootid = run(["btrfs", "inspect-internal", "rootid", str(path)], timeout=10).strip()
            found = self._qgroups[path] = f"0/{rootid}"
        return found

    def make_folder(self, volume: VolumeRef) -> None:
        run(["btrfs", "subvolume", "create", str(volume.path)])
        volume.path.chmod(0o755)

    def apply(self, volume: VolumeRef, *, limit: int | None, usage: int, in_use: bool) -> None:
        if not is_subvolume(volume.path):
            if limit is None:
                return
            raise DiskLimitConflict(
                "This volume is a plain folder (made before the btrfs backend): "
                "it cannot hold a limit"
            )
        run(["btrfs", "qgroup", "limit", str(limit) if limit else "none", str(volume.path)])

    def measures(self, volume: VolumeRef) -> bool:
        return is_subvolume(volume.path)

    def usage(self, volume: VolumeRef) -> int | None:
        if not is_subvolume(volume.path):
            return None
        try:
            qgroup = self._qgroup(volume.path)
            text = run(
                ["btrfs", "qgroup", "show", "-re", "--raw", "-f", str(volume.path)], timeout=10
            )
        except CommandFailed:
            return None
        found = parse_qgroup_show(text, qgroup)
        return found[0] if found is not None else None

    def attach(self, volume: VolumeRef, *, limit: int | None) -> None:
        if limit is not None and is_subvolume(volume.path):
            # A qgroup outlives restarts; setting it again heals one lost to a rescan.
            self.apply(volume, limit=limit, usage=0, in_use=False)

    def release(self, volume: VolumeRef) -> None:
        self._qgroups.pop(volume.path, None)
        if is_subvolume(volume.path):
            qgroup = None
            with contextlib.suppress(CommandFailed):
                qgroup = self._qgroup(volume.path)
            run(["btrfs", "subvolume", "delete", str(volume.path)])
            if qgroup is not None:
                # Kept until the subvolume is cleaned if this fails: harmless.
                with contextlib.suppress(CommandFailed):
                    run(["btrfs", "qgroup", "destroy", qgroup, str(volume.path.parent)], timeout=10)
