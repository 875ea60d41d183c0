"""The project-quota backend: what can be tested on a kernel without project quotas.

The struct layouts and request numbers must match ``linux/quota.h`` and ``linux/fs.h``
byte for byte; the xattr ioctl is real on ext4 (reading a folder's project id works
without quotas); the probe must report the backend unsupported on this kernel.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from lightd.fs.limits import project
from lightd.fs.limits.base import mount_of


def test_struct_layouts_match_the_kernel_headers() -> None:
    assert ctypes.sizeof(project.IfDqblk) == 72
    assert project.IfDqblk.dqb_curspace.offset == 16
    assert project.IfDqblk.dqb_valid.offset == 64
    assert ctypes.sizeof(project.IfDqinfo) == 24
    assert ctypes.sizeof(project.FsXattr) == 28
    assert project.FsXattr.fsx_projid.offset == 12


@pytest.mark.parametrize(
    ("cmd", "kind", "expected"),
    [
        pytest.param(project.Q_GETQUOTA, project.PRJQUOTA, 0x80000702, id="getquota-project"),
        pytest.param(project.Q_SETQUOTA, project.PRJQUOTA, 0x80000802, id="setquota-project"),
        pytest.param(project.Q_GETINFO, 0, 0x80000500, id="getinfo-user"),
    ],
)
def test_qcmd(cmd: int, kind: int, expected: int) -> None:
    assert project.qcmd(cmd, kind) == expected


def test_ioctl_numbers_are_the_headers() -> None:
    assert project.FS_IOC_FSGETXATTR == 0x801C581F
    assert project.FS_IOC_FSSETXATTR == 0x401C5820


@pytest.mark.parametrize(
    ("limit", "blocks"),
    [
        pytest.param(None, 0, id="none-is-zero"),
        pytest.param(1024, 1, id="one-kib"),
        pytest.param(1025, 2, id="rounded-up"),
        pytest.param(8 * 1024 * 1024, 8192, id="eight-mib"),
    ],
)
def test_limit_block(limit: int | None, blocks: int) -> None:
    block = project.limit_block(limit)
    assert block.dqb_bhardlimit == blocks
    assert block.dqb_valid == project.QIF_BLIMITS


def test_fsgetxattr_reads_a_real_folder(tmp_path: Path) -> None:
    found = mount_of(tmp_path)
    if found is None or found[1] not in ("ext4", "xfs", "btrfs"):
        pytest.skip("the temp folder is not on ext4, XFS or btrfs")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attr = project.get_xattr(fd)
    finally:
        os.close(fd)
    assert attr.fsx_projid == 0  # no project set on a plain folder
    assert not attr.fsx_xflags & project.FS_XFLAG_PROJINHERIT


def test_probe_reports_project_quotas_unsupported_here(tmp_path: Path) -> None:
    found = project.probe(tmp_path)
    assert found.name == "project"
    assert not found.usable
    assert "unsupported" in found.reason or "not ext4 or XFS" in found.reason
