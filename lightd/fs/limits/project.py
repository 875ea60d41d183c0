"""The project backend: ext4/XFS project quotas through ``quotactl`` and the xattr ioctl.

Each volume gets a project id (:func:`~lightd.fs.limits.decide.project_id`); its folder
is tagged with that id and ``FS_XFLAG_PROJINHERIT`` (``FS_IOC_FSSETXATTR``), so all
that is created below inherits it, and the quota's hard block limit is set with
``quotactl(QCMD(Q_SETQUOTA, PRJQUOTA))`` on the file system's device; usage is
``Q_GETQUOTA``'s ``dqb_curspace`` (O(1)). Written against the documented kernel interface
(``linux/quota.h``, ``linux/fs.h``) through ctypes, as Pelican does with fsquota.

This machine's kernel has no ``CONFIG_QFMT_V2`` and no ``CONFIG_XFS_QUOTA``: the probe asks
the kernel (``Q_GETINFO``) and reports it unsupported; the struct layouts and numbers
are unit-tested. It decides nothing itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from pathlib import Path

from lightd.errors import DiskLimitConflict, LightdError
from lightd.fs.limits.base import VolumeRef, mount_of
from lightd.fs.limits.decide import Probe, project_id

# linux/quota.h
SUBCMDSHIFT = 8
SUBCMDMASK = 0x00FF
PRJQUOTA = 2
Q_GETINFO = 0x800005
Q_GETQUOTA = 0x800007
Q_SETQUOTA = 0x800008
QIF_BLIMITS = 1
QIF_SPACE = 2
QIF_DQBLKSIZE = 1024  # quota block limits are in units of 1 KiB

# linux/fs.h
FS_XFLAG_PROJINHERIT = 0x00000200


def qcmd(cmd: int, kind: int) -> int:
    """``QCMD(cmd, type)`` of ``linux/quota.h``."""
    return (cmd << SUBCMDSHIFT) | (kind & SUBCMDMASK)


class IfDqblk(ctypes.Structure):
    """``struct if_dqblk`` (72 bytes)."""

    _fields_ = (
        ("dqb_bhardlimit", ctypes.c_uint64),
        ("dqb_bsoftlimit", ctypes.c_uint64),
        ("dqb_curspace", ctypes.c_uint64),
        ("dqb_ihardlimit", ctypes.c_uint64),
        ("dqb_isoftlimit", ctypes.c_uint64),
        ("dqb_curinodes", ctypes.c_uint64),
        ("dqb_btime", ctypes.c_uint64),
        ("dqb_itime", ctypes.c_uint64),
        ("dqb_valid", ctypes.c_uint32),
    )


class IfDqinfo(ctypes.Structure):
    """``struct if_dqinfo`` (24 bytes)."""

    _fields_ = (
        ("dqi_bgrace", ctypes.c_uint64),
        ("dqi_igrace", ctypes.c_uint64),
        ("dqi_flags", ctypes.c_uint32),
        ("dqi_valid", ctypes.c_uint32),
    )


class FsXattr(ctypes.Structure):
    """``struct fsxattr`` (28 bytes)."""

    _fields_ = (
        ("fsx_xflags", ctypes.c_uint32),
        ("fsx_extsize", ctypes.c_uint32),
        ("fsx_nextents", ctypes.c_uint32),
        ("fsx_projid", ctypes.c_uint32),
        ("fsx_cowextsize", ctypes.c_uint32),
        ("fsx_pad", ctypes.c_ubyte * 8),
    )


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    """``_IOC`` of ``asm-generic/ioctl.h`` (x86 and arm64 share it)."""
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | number


FS_IOC_FSGETXATTR = _ioc(2, "X", 31, ctypes.sizeof(FsXattr))  # _IOR
FS_IOC_FSSETXATTR = _ioc(1, "X", 32, ctypes.sizeof(FsXattr))  # _IOW


class QuotaError(LightdError):
    """The kernel refused a quota call; ``errno`` says why."""

    def __init__(self, what: str, code: int) -> None:
        self.errno = code
        super().__init__(f"{what}: {os.strerror(code)}")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def quotactl(cmd: int, device: str, ident: int, buffer: ctypes.Structure | None) -> None:
    libc = _libc()
    libc.quotactl.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)
    pointer = ctypes.addressof(buffer) if buffer is not None else None
    if libc.quotactl(cmd, os.fsencode(device), ident, pointer) != 0:
        code = ctypes.get_errno()
        raise QuotaError(f"quotactl {cmd:#x}", code)


def get_xattr(fd: int) -> FsXattr:
    attr = FsXattr()
    fcntl.ioctl(fd, FS_IOC_FSGETXATTR, attr)
    return attr


def set_project(fd: int, projid: int) -> None:
    """Tag the folder ``fd`` with ``projid`` and make its children inherit it."""
    attr = get_xattr(fd)
    attr.fsx_projid = projid
    attr.fsx_xflags |= FS_XFLAG_PROJINHERIT
    fcntl.ioctl(fd, FS_IOC_FSSETXATTR, attr)


def limit_block(limit: int | None) -> IfDqblk:
    """The ``if_dqblk`` that sets a hard byte limit (0: none), rounded up to 1 KiB."""
    block = IfDqblk()
    block.dqb_bhardlimit = 0 if limit is None else -(-limit // QIF_DQBLKSIZE)
    block.dqb_bsoftlimit = 0
    block.dqb_valid = QIF_BLIMITS
    return block


def probe(volumes_root: Path) -> Probe:
    where = volumes_root if volumes_root.exists() else volumes_root.parent
    found = mount_of(where)
    if found is None:
        return Probe("project", False, f"cannot find the mount of {where}")
    point, fstype, device = found
    if fstype not in ("ext4", "xfs"):
        return Probe("project", False, f"{point} is {fstype}, not ext4 or XFS")
    try:
        quotactl(qcmd(Q_GETINFO, PRJQUOTA), device, 0, IfDqinfo())
    except QuotaError as exc:
        hint = {
            errno.ESRCH: "project quotas are not turned on for it",
            errno.ENOSYS: "the kernel has no quota support",
            errno.EINVAL: "the kernel has no project quota format (CONFIG_QFMT_V2/XFS_QUOTA)",
            errno.ENOTBLK: "its source is not a block device",
            errno.ENOENT: "its device cannot be opened",
        }.get(exc.errno, exc.message)
        return Probe("project", False, f"unsupported here: {fstype} at {point}: {hint}")
    return Probe("project", True, f"{fstype} at {point} has project quotas on")


class ProjectBackend:
    name = "project"
    kernel_enforced = True

    def __init__(self, volumes_root: Path) -> None:
        found = mount_of(volumes_root)
        self._device = found[2] if found is not None else ""

    def make_folder(self, volume: VolumeRef) -> None:
        volume.path.mkdir(mode=0o755)
        volume.path.chmod(0o755)
        fd = os.open(volume.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            set_project(fd, project_id(volume.id))
        finally:
            os.close(fd)

    def apply(self, volume: VolumeRef, *, limit: int | None, usage: int, in_use: bool) -> None:
        try:
            quotactl(
                qcmd(Q_SETQUOTA, PRJQUOTA), self._device, project_id(volume.id), limit_block(limit)
            )
        except QuotaError as exc:
            raise DiskLimitConflict(f"Project quota refused: {exc.message}") from exc

    def measures(self, volume: VolumeRef) -> bool:
        return True

    def usage(self, volume: VolumeRef) -> int | None:
        block = IfDqblk()
        try:
            quotactl(qcmd(Q_GETQUOTA, PRJQUOTA), self._device, project_id(volume.id), block)
        except QuotaError:
            return None
        return int(block.dqb_curspace) if block.dqb_valid & QIF_SPACE else None

    def attach(self, volume: VolumeRef, *, limit: int | None) -> None:
        return None  # quotas live in the file system: nothing to do at start

    def release(self, volume: VolumeRef) -> None:
        with contextlib.suppress(DiskLimitConflict):
            self.apply(volume, limit=None, usage=0, in_use=False)
