"""The btrfs backend with a real daemon whose data folder is on a loop-mounted btrfs.

Root only. A container writing past its volume's qgroup limit with ``dd`` is stopped by
the kernel (EDQUOT), raising the limit while it runs lets it go on, usage reads never
walk the tree, and every lightd writer answers 507 with nothing left past the limit.
In-process: usage is read from sysfs (no process), agrees with ``btrfs qgroup show``
and falls back to it where sysfs lacks the qgroup.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightd.fs.limits.base import VolumeRef
from lightd.fs.limits.btrfs import BtrfsBackend
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


def test_usage_comes_from_sysfs_fast_and_agrees_with_the_cli(btrfs_mount: Path) -> None:
    """In-process, on the loop btrfs: sysfs answers without a process, in well under the
    10 ms target, counts uncommitted writes at once (``rsv_data``), and equals what
    ``btrfs qgroup show`` answers once the transaction is committed."""
    backend = BtrfsBackend()
    volume = VolumeRef("v-sysfs", btrfs_mount / "v-sysfs")
    backend.make_folder(volume)
    try:
        backend.apply(volume, limit=64 * MiB, usage=0, in_use=False)
        folder = backend.sysfs_folder(volume.path)
        assert folder is not None and (folder / "referenced").exists(), folder
        (volume.path / "data").write_bytes(os.urandom(5 * MiB))
        uncommitted = backend.usage(volume)
        assert uncommitted is not None and uncommitted >= 5 * MiB  # no commit needed
        subprocess.run(["btrfs", "filesystem", "sync", str(btrfs_mount)], check=True)
        from_sysfs = backend.usage(volume)
        assert from_sysfs == backend.cli_usage(volume)
        assert from_sysfs is not None and 5 * MiB <= from_sysfs < 6 * MiB
        # Where sysfs lacks the qgroup, the CLI answers the same figure.
        assert BtrfsBackend(sysfs=btrfs_mount / "no-sysfs").usage(volume) == from_sysfs
        spent = []
        for _ in range(200):
            started = time.perf_counter()
            backend.usage(volume)
            spent.append(time.perf_counter() - started)
        assert statistics.median(spent) < 0.002, f"median {statistics.median(spent) * 1e3} ms"
    finally:
        backend.release(volume)
    assert not volume.path.exists()
