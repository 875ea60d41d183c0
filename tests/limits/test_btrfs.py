"""The btrfs backend with a real daemon whose data folder is on a loop-mounted btrfs.

Root only. A container writing past its volume's qgroup limit with ``dd`` is stopped by
the kernel (EDQUOT), raising the limit while it runs lets it go on, usage reads never
walk the tree, and every lightd writer answers 507 with nothing left past the limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.limits.conftest import ROOT_ONLY
from tests.limits.rig import DiskRig, MiB
from tests.limits.writers import assert_every_writer_refused, assert_reads_do_not_walk

pytestmark = [ROOT_ONLY, pytest.mark.docker]


@pytest.fixture
def rig(btrfs_mount: Path) -> Iterator[DiskRig]:
    made = DiskRig(btrfs_mount / "daemon", "btrfs")
    try:
        made.start()
        yield made
    finally:
        made.close()


def test_probe_reports_btrfs_in_system(rig: DiskRig) -> None:
    disk = rig.http.get("/system").json()["disk"]
    assert disk["backend"] == "btrfs"
    assert disk["kernel_enforced"] is True
    assert "configured" in disk["reason"]
    assert {probe["name"] for probe in disk["probes"]} == {"btrfs", "project", "image", "soft"}


def test_volume_is_a_subvolume_with_its_limit(rig: DiskRig) -> None:
    volume_id = rig.volume(16 * MiB)
    shown = rig.show(volume_id)
    assert shown["disk_limit"] == 16 * MiB
    assert os.stat(shown["path"]).st_ino == 256  # a btrfs subvolume's root
    changed = rig.http.post(f"/volumes/{volume_id}/limit", json={"disk_limit": 32 * MiB})
    assert changed.status_code == 200, changed.text
    assert changed.json()["disk_limit"] == 32 * MiB
    dropped = rig.http.post(f"/volumes/{volume_id}/limit", json={"disk_limit": None})
    assert dropped.status_code == 200 and dropped.json()["disk_limit"] is None
    assert rig.http.delete(f"/volumes/{volume_id}").status_code == 200
    assert not Path(shown["path"]).exists()


def test_kernel_stops_dd_and_a_raised_limit_lets_it_go_on(rig: DiskRig) -> None:
    volume_id = rig.volume(16 * MiB)
    command = (
        "dd if=/dev/zero of=/home/container/big bs=1M count=32; echo dd-exit-$?; "
        "until dd if=/dev/zero of=/home/container/more bs=1M count=24 2>/dev/null; "
        "do sleep 0.3; done; echo wrote-more; exec sleep 1000"
    )
    internal_id = rig.container("dd", volume_id, command)
    out = rig.wait_console(internal_id, "dd-exit-")
    assert "Disk quota exceeded" in out
    assert "dd-exit-1" in out
    assert "wrote-more" not in out
    usage = rig.show(volume_id)["disk_usage"]
    assert usage <= 16 * MiB + MiB
    raised = rig.http.post(f"/volumes/{volume_id}/limit", json={"disk_limit": 128 * MiB})
    assert raised.status_code == 200, raised.text
    rig.wait_console(internal_id, "wrote-more")
    assert rig.get(internal_id)["state"] in ("running", "starting")


def test_usage_reads_do_not_walk(rig: DiskRig) -> None:
    assert_reads_do_not_walk(rig, rig.volume(64 * MiB))


def test_every_writer_answers_507_and_writes_nothing_past_the_limit(rig: DiskRig) -> None:
    assert_every_writer_refused(rig, rig.volume(24 * MiB), limit=24 * MiB)
