"""The btrfs backend: each volume is a subvolume with a qgroup limit on referenced bytes.

Usage is what the kernel counts against the limit: the qgroup's ``referenced`` bytes
plus its ``rsv_data`` (data written but not yet committed), read from sysfs
(``/sys/fs/btrfs/<fsid>/qgroups/0_<subvolume id>/``, kernels >= 5.9; the fsid and the
subvolume id come once per volume from the ``BTRFS_IOC_FS_INFO`` and
``BTRFS_IOC_INO_LOOKUP`` ioctls): two small file reads, no process, O(1) whatever the
file count. Where sysfs lacks the qgroup it falls back to ``btrfs qgroup show -f``
(``referenced`` only). The kernel updates ``referenced`` at each transaction commit
(every 30 s by default, ``commit=`` mount option): new writes show at once through
``rsv_data``, a deletion shows only after the next commit. Lightd accepts that lag and
never forces a commit per read (``btrfs filesystem sync`` costs a transaction).

A limit change applies at once, also to a container writing now, and the kernel
answers EDQUOT past it. Volume folders made before this backend was chosen are plain
folders: a limit on them is refused (409) rather than faked. It shells out to
btrfs-progs (as wings-rs does) for changes and decides nothing itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import uuid
from pathlib import Path

from lightd.errors import DiskLimitConflict
from lightd.fs.limits.base import CommandFailed, VolumeRef, run
from lightd.fs.limits.decide import Probe

BTRFS_SUPER_MAGIC = 0x9123683E
BTRFS_FIRST_FREE_OBJECTID = 256  # subvolumes have ids from here; plain folders do not
SYSFS = Path("/sys/fs/btrfs")
# From linux/btrfs.h: _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args) (1024 bytes, the
# fsid at offset 16) and _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args) (4096 bytes:
# treeid, objectid, name).
FS_INFO_SIZE = 1024
INO_LOOKUP_SIZE = 4096
BTRFS_IOC_FS_INFO = (2 << 30) | (FS_INFO_SIZE << 16) | (0x94 << 8) | 31
BTRFS_IOC_INO_LOOKUP = (3 << 30) | (INO_LOOKUP_SIZE << 16) | (0x94 << 8) | 18
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def fs_uuid(path: Path) -> str | None:
    """The btrfs fsid of the file system ``path`` is on (its folder name in sysfs)."""
    try:
        fd = os.open(path, DIR_FLAGS)
    except OSError:
        return None
    try:
        buffer = bytearray(FS_INFO_SIZE)
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buffer, True)
    except OSError:
        return None
    finally:
        os.close(fd)
    return str(uuid.UUID(bytes=bytes(buffer[16:32])))


def subvolume_id(path: Path) -> int | None:
    """The id of the subvolume ``path`` is in (``btrfs inspect-internal rootid``)."""
    try:
        fd = os.open(path, DIR_FLAGS)
    except OSError:
        return None
    try:
        buffer = bytearray(INO_LOOKUP_SIZE)
        struct.pack_into("=QQ", buffer, 0, 0, BTRFS_FIRST_FREE_OBJECTID)
        fcntl.ioctl(fd, BTRFS_IOC_INO_LOOKUP, buffer, True)
    except OSError:
        return None
    finally:
        os.close(fd)
    found: int = struct.unpack_from("=Q", buffer, 0)[0]
    return found


def read_number(path: Path) -> int:
    with path.open("rb") as handle:
        return int(handle.read(64))


def sysfs_usage(folder: Path) -> int | None:
    """``referenced`` + ``rsv_data`` of a qgroup's sysfs folder; None when it is not there."""
    try:
        referenced = read_number(folder / "referenced")
    except (OSError, ValueError):
        return None
    try:
        reserved = read_number(folder / "rsv_data")
    except (OSError, ValueError):
        reserved = 0
    return referenced + reserved


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

    def __init__(self, sysfs: Path = SYSFS) -> None:
        self.sysfs = sysfs
        self._qgroups: dict[Path, str] = {}
        self._sysfs_folders: dict[Path, Path | None] = {}

    def _qgroup(self, path: Path) -> str:
        found = self._qgroups.get(path)
        if found is None:
            rootid = subvolume_id(path)
            if rootid is None:
                text = run(["btrfs", "inspect-internal", "rootid", str(path)], timeout=10)
                found = self._qgroups[path] = f"0/{text.strip()}"
            else:
                found = self._qgroups[path] = f"0/{rootid}"
        return found

    def sysfs_folder(self, path: Path) -> Path | None:
        """The volume's qgroup folder in sysfs (found once), or None without one."""
        if path not in self._sysfs_folders:
            fsid = fs_uuid(path)
            rootid = subvolume_id(path)
            folder = None
            if fsid is not None and rootid is not None:
                folder = self.sysfs / fsid / "qgroups" / f"0_{rootid}"
            self._sysfs_folders[path] = folder
        return self._sysfs_folders[path]

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
        folder = self.sysfs_folder(volume.path)
        if folder is not None:
            found_there = sysfs_usage(folder)
            if found_there is not None:
                return found_there
        return self.cli_usage(volume)

    def cli_usage(self, volume: VolumeRef) -> int | None:
        """``referenced`` from ``btrfs qgroup show`` (the fallback: a process per read)."""
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
        self._sysfs_folders.pop(volume.path, None)
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
