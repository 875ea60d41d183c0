"""Truncating restores under the ``soft`` disk backend, through a real daemon.

The restore stages the backup inside the volume beside the old tree; the soft accountant
counts the staged tree once it is whole (both trees are on disk until the swap) and takes
the old tree off once it is removed. So a restore whose tree does not fit beside the old
one fails with ``Disk limit exceeded`` and leaves the old files whole, as the kernel
backends do; one that fits leaves the usage at exactly the restored tree's apparent size,
the figure a fresh walk finds. The background rescan is made rare here (an hour) so that
every figure checked between the daemon's first walk and its restart is lightd's own
accounting, not a walk's correction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backups.conftest import Vol, run_backup, run_restore, snapshot
from tests.limits.rig import DiskRig, MiB
from tests.limits.writers import apparent_size
from tests.support.daemon import wait_for

pytestmark = [pytest.mark.docker]
LIMIT = 8 * MiB


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[DiskRig]:
    made = DiskRig(tmp_path / "daemon", "soft", LIGHTD_VOLUMES__SOFT_RESCAN_SECONDS="3600")
    try:
        made.start()
        yield made
    finally:
        made.close()


def upload(rig: DiskRig, vol: Vol, path: str, size: int) -> None:
    answer = rig.http.put(
        f"{vol.url}/files/content", params={"path": path}, content=os.urandom(size)
    )
    assert answer.status_code == 200, answer.text


def usage(rig: DiskRig, vol: Vol) -> int:
    return int(rig.show(vol.id)["disk_usage"])


def leftovers(vol: Vol) -> list[str]:
    return [name for name in os.listdir(vol.path) if name.startswith(".lightd-tmp-")]


def test_soft_truncating_restore_counts_the_staged_tree(rig: DiskRig) -> None:
    volume_id = rig.volume(LIMIT)
    vol = Vol(id=volume_id, path=Path(rig.show(volume_id)["path"]))
    # The daemon walks a new volume within a second (then not for an hour): from here
    # on the figures are lightd's own counts.
    time.sleep(2)
    upload(rig, vol, "world/region.bin", 2 * MiB)
    upload(rig, vol, "world/level.dat", MiB)
    upload(rig, vol, "server.properties", 1000)
    tree_a = snapshot(vol.path)
    size_a = apparent_size(vol.path)
    assert usage(rig, vol) == size_a
    backup = run_backup(rig.http, vol)
    assert backup["state"] == "done", backup

    # 4 MiB in the volume, 3 MiB restored beside it: 7 MiB fit in the 8 MiB limit.
    upload(rig, vol, "extra.bin", MiB)
    assert usage(rig, vol) == size_a + MiB
    restored = run_restore(rig.http, vol, backup["backup_id"], truncate=True)
    assert restored["restore"]["state"] == "done", restored
    assert snapshot(vol.path) == tree_a and leftovers(vol) == []
    # The old tree is off the count, the restored one on it, once each.
    assert apparent_size(vol.path) == size_a
    assert usage(rig, vol) == size_a

    # 6 MiB in the volume: the 3 MiB tree does not fit beside it (the old files stay).
    upload(rig, vol, "more.bin", 3 * MiB)
    before = snapshot(vol.path)
    figure = usage(rig, vol)
    assert figure == apparent_size(vol.path) == size_a + 3 * MiB
    refused = run_restore(rig.http, vol, backup["backup_id"], truncate=True)
    assert refused["restore"]["state"] == "failed", refused
    assert refused["restore"]["error"] == "Disk limit exceeded", refused
    assert snapshot(vol.path) == before and leftovers(vol) == []
    assert usage(rig, vol) == figure  # nothing of the refused restore stays counted
    # An upload past the room left gets the same answer.
    too_big = rig.http.put(
        f"{vol.url}/files/content", params={"path": "big.bin"}, content=os.urandom(3 * MiB)
    )
    assert too_big.status_code == 507 and too_big.json() == {"error": "Disk limit exceeded"}

    # A fresh walk (the first after a restart) finds the figure lightd kept.
    rig.restart()
    wait_for(
        lambda: usage(rig, vol) == figure,
        timeout=30,
        what=f"the first walk after the restart: {figure} bytes",
    )
