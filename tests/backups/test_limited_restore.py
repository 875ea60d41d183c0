"""Truncating restores of kernel-limited volumes, through a real daemon (root only).

With ``volumes.disk_backend`` ``btrfs`` (the volume is a subvolume with a qgroup limit)
and ``image`` (an ext4 image mounted on the volume folder), on loop file systems made by
the fixtures of ``tests/limits`` (always unmounted and detached): a ``truncate: true``
restore makes the volume exactly the backup and the volume keeps its limit (same
subvolume or mount, the kernel still stops a writer at it); then the daemon is killed
with SIGKILL while the restore swaps entries (seen by its journal) and, after the next
start, the volume holds the old or the new files whole, matching the restore's record.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightd.backups import swap
from tests.backups.conftest import Vol, make_tree, run_backup, run_restore, snapshot, wait_backup
from tests.limits.conftest import ROOT_ONLY, loop_fs, mounts_below, tools_present
from tests.limits.rig import DiskRig, MiB

pytestmark = [ROOT_ONLY, pytest.mark.docker]
LIMIT = 256 * MiB
TOP_LEVEL = 3000  # entries at the volume root: the swap takes long enough to be caught


@pytest.fixture(params=["btrfs", "image"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DiskRig]:
    backend = str(request.param)
    tools = ("mkfs.btrfs", "btrfs") if backend == "btrfs" else ("mkfs.ext4", "resize2fs")
    if not tools_present("losetup", *tools):
        pytest.skip(f"tools of the {backend} backend missing")
    kind = "btrfs" if backend == "btrfs" else "ext4"
    with loop_fs(tmp_path / kind, kind, size="1G") as mount:
        made = DiskRig(mount / "daemon", backend)
        try:
            made.start()
            assert made.http.get("/system").json()["disk"]["backend"] == backend
            yield made
        finally:
            made.close()


def _held_by_kernel(rig: DiskRig, path: Path) -> None:
    """The volume is still its subvolume or its mounted image, and the kernel stops a
    writer at the limit."""
    backend = rig.http.get("/system").json()["disk"]["backend"]
    if backend == "btrfs":
        assert path.stat().st_ino == 256  # a subvolume's root
    else:
        assert str(path) in mounts_below(path.parent)
    with pytest.raises(OSError) as refused, (path / "too-big.bin").open("wb") as handle:
        chunk = b"\x01" * MiB
        for _ in range(LIMIT // MiB + 16):
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    assert refused.value.errno in (errno.ENOSPC, errno.EDQUOT)
    (path / "too-big.bin").unlink()


def test_truncating_restore_keeps_the_kernel_limit_and_survives_a_kill(rig: DiskRig) -> None:
    volume_id = rig.volume(LIMIT)
    vol = Vol(id=volume_id, path=Path(rig.show(volume_id)["path"]))
    make_tree(vol.path, files=20)
    before = snapshot(vol.path)
    done = run_backup(rig.http, vol)
    assert done["state"] == "done", done
    (vol.path / "server.properties").write_text("changed")
    (vol.path / "extra.bin").write_bytes(os.urandom(2 * MiB))
    shutil.rmtree(vol.path / "dir2")
    restored = run_restore(rig.http, vol, done["backup_id"], truncate=True)
    assert restored["restore"]["state"] == "done", restored
    assert snapshot(vol.path) == before
    assert rig.show(volume_id)["disk_limit"] == LIMIT
    _held_by_kernel(rig, vol.path)

    # Many top-level entries, then a kill -9 once the swap's journal is on disk.
    for index in range(TOP_LEVEL):
        (vol.path / f"top{index:05}.txt").write_text(f"new {index}")
    new_backup = run_backup(rig.http, vol)
    assert new_backup["state"] == "done", new_backup
    new = snapshot(vol.path)
    journal = vol.path / swap.Names(new_backup["backup_id"]).journal
    for attempt in range(3):
        restored = run_restore(rig.http, vol, done["backup_id"], truncate=True)
        assert restored["restore"]["state"] == "done" and snapshot(vol.path) == before
        old = before
        answer = rig.http.post(
            f"{vol.url}/backups/{new_backup['backup_id']}/restore", json={"truncate": True}
        )
        assert answer.status_code == 202, answer.text
        deadline = next_look = time.monotonic()
        deadline += 120
        while not journal.exists() and (now := time.monotonic()) < deadline:
            if now >= next_look:  # now and then: has it ended before the journal was seen?
                next_look = now + 0.2
                body = rig.http.get(f"{vol.url}/backups/{new_backup['backup_id']}").json()
                if body["restore"]["state"] != "running":
                    break
        assert rig.daemon.proc is not None
        rig.daemon.proc.send_signal(signal.SIGKILL)
        rig.daemon.stop(kill=True)
        caught = journal.exists()
        rig.start()
        after = snapshot(vol.path)
        body = wait_backup(rig.http, vol, new_backup["backup_id"], restore=True)
        assert not [p for p in vol.path.iterdir() if p.name.startswith(".lightd-tmp-")]
        if body["restore"]["state"] == "done":
            assert after == new
        else:
            assert body["restore"]["error"] == "Interrupted", body
            assert after == old
        _held_by_kernel(rig, vol.path)
        if caught:
            break
        assert attempt < 2, "the swap was never caught with its journal on disk"
