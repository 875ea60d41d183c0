"""Safety: one backup per volume (409), kill -9 mid backup and mid restore, a full disk,
and a restore of a volume whose container runs (stopped first, then running again).

Slow backups come from ``backups.write_limit_mib_s``. Loop file systems are made in the
test's temp folder and always unmounted and detached.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backups.conftest import (
    Vol,
    backup_config,
    make_tree,
    make_volume,
    run_backup,
    run_restore,
    snapshot,
    wait_backup,
)
from tests.conftest import FAST_RECONCILER
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab
from tests.support.ws import Watcher

MIB = 1024 * 1024


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon of this test whose backups read at 2 MiB/s."""
    proc = DaemonProcess(
        tmp_path / "slow",
        env=dict(FAST_RECONCILER),
        config=backup_config(tmp_path / "slow", write_limit_mib_s=2),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(kill=True)


def _running(api: httpx.Client, vol: Vol, backup_id: str, *, restore: bool = False) -> None:
    def moving() -> bool:
        body = api.get(f"{vol.url}/backups/{backup_id}").json()
        part = body["restore"] if restore else body
        return bool(part["state"] == "running" and part["progress"]["bytes_done"] > 0)

    wait_for(moving, timeout=20, what="progress")


def test_one_backup_per_volume_and_kill_during_backup(slow: DaemonProcess) -> None:
    with slow.client() as api:
        vol = make_volume(api)
        (vol.path / "big.bin").write_bytes(os.urandom(12 * MIB))
        started = api.post(f"{vol.url}/backups", json={})
        assert started.status_code == 202
        backup_id = started.json()["backup_id"]
        again = api.post(f"{vol.url}/backups", json={})
        assert again.status_code == 409 and again.json() == {"error": "Backup already running"}
        assert api.delete(f"{vol.url}/backups/{backup_id}").status_code == 409
        _running(api, vol, backup_id)
    slow.stop(kill=True)
    slow.start()
    with slow.client() as api:
        body = api.get(f"{vol.url}/backups/{backup_id}").json()
        assert body["state"] == "failed" and body["error"] == "Interrupted", body
        assert os.listdir(slow.root / "backups") == []
        # The next backup works, and restores (slowly) after a kill leave the volume whole.
        done = wait_backup(api, vol, api.post(f"{vol.url}/backups", json={}).json()["backup_id"])
        assert done["state"] == "done", done
        before = snapshot(vol.path)
        (vol.path / "new.txt").write_text("after the backup")
        before_restore = snapshot(vol.path)
        restoring = api.post(
            f"{vol.url}/backups/{done['backup_id']}/restore", json={"truncate": True}
        )
        assert restoring.status_code == 202
        assert api.post(f"{vol.url}/backups", json={}).status_code == 409
        _running(api, vol, done["backup_id"], restore=True)
    slow.stop(kill=True)
    # Killed while extracting: the old files are untouched; the staging folder (a
    # reserved .lightd-tmp-* entry at the volume root) is removed at the next start.
    staged = {k: v for k, v in snapshot(vol.path).items() if not k.startswith(".lightd-tmp-")}
    assert staged == before_restore
    slow.start()
    with slow.client() as api:
        body = api.get(f"{vol.url}/backups/{done['backup_id']}").json()
        assert body["state"] == "done"
        assert body["restore"]["state"] == "failed" and body["restore"]["error"] == "Interrupted"
        assert snapshot(vol.path) == before_restore
        assert not [p for p in vol.path.iterdir() if p.name.startswith(".lightd-")]
        assert not [p for p in vol.path.parent.iterdir() if p.name.startswith(".lightd-")]
        # And a restore that is left alone ends with the backup.
        restored = run_restore(api, vol, done["backup_id"], truncate=True)
        assert restored["restore"]["state"] == "done"
        assert snapshot(vol.path) == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB ext4 file system on a loop device, mounted in the temp folder."""
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    image = tmp_path / "disk.img"
    mount = tmp_path / "disk"
    mount.mkdir()
    with image.open("wb") as handle:
        handle.truncate(16 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-d", str(mount)], check=False)  # -d detaches the loop
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def test_full_disk_fails_with_insufficient_storage(tmp_path: Path, small_disk: Path) -> None:
    config = backup_config(tmp_path)
    config["backups"]["local_dir"] = str(small_disk / "backups")
    proc = DaemonProcess(tmp_path / "d", env=dict(FAST_RECONCILER), config=config)
    proc.start()
    try:
        with proc.client() as api:
            vol = make_volume(api)
            (vol.path / "big.bin").write_bytes(os.urandom(40 * MIB))
            failed = run_backup(api, vol)
            assert failed["state"] == "failed"
            assert failed["error"] == "Insufficient storage", failed
            assert os.listdir(small_disk / "backups") == []
            (vol.path / "big.bin").unlink()
            (vol.path / "small.txt").write_text("fits")
            assert run_backup(api, vol)["state"] == "done"
            api.delete(vol.url)
    finally:
        proc.stop()


def test_restore_stops_a_running_container_and_starts_it_again(lab: Lab) -> None:
    volume_id = lab.volume()
    vol = Vol(id=volume_id, path=Path(lab.volume_path(volume_id)))
    make_tree(vol.path, files=10)
    before = snapshot(vol.path)
    cid = lab.create(
        "bk", volume_id=volume_id, start_pattern="Done",
        startup_command="echo 'Done (0.1s)!'; exec sleep 1000",
    )  # fmt: skip
    lab.wait_state(cid, "running")
    done = run_backup(lab.api, vol)
    assert done["state"] == "done"
    (vol.path / "server.properties").write_text("changed")
    with Watcher(lab.daemon, f"/ws/{cid}?token={lab.daemon.token}") as watcher:
        answer = lab.api.post(
            f"{vol.url}/backups/{done['backup_id']}/restore", json={"truncate": True}
        )
        assert answer.status_code == 202
        watcher.until(
            lambda e: (
                e["event"] == "daemon_message" and "Restore" in e["data"] and "started" in e["data"]
            ),
            what="restore started",
        )
        watcher.until(lambda e: e["event"] == "event" and e["data"] == "exit", what="stopped")
        watcher.until(
            lambda e: (
                e["event"] == "daemon_message" and "Restore" in e["data"] and "done" in e["data"]
            ),
            what="restore done",
        )
    result = wait_backup(lab.api, vol, done["backup_id"], restore=True)
    assert result["restore"]["state"] == "done", result
    assert snapshot(vol.path) == before
    # Back to its desired power state: running, and the document was never edited.
    lab.wait_state(cid, "running")


def test_concurrency_limit_queues_backups(tmp_path: Path) -> None:
    config = backup_config(tmp_path / "d", write_limit_mib_s=3, concurrency=1)
    proc = DaemonProcess(tmp_path / "d", env=dict(FAST_RECONCILER), config=config)
    proc.start()
    try:
        with proc.client() as api:
            first, second = make_volume(api), make_volume(api)
            for vol in (first, second):
                (vol.path / "big.bin").write_bytes(os.urandom(6 * MIB))
            a = api.post(f"{first.url}/backups", json={}).json()["backup_id"]
            b = api.post(f"{second.url}/backups", json={}).json()["backup_id"]
            _running(api, first, a)
            queued = api.get(f"{second.url}/backups/{b}").json()
            assert queued["state"] == "running" and queued["progress"]["bytes_done"] == 0
            done_a = wait_backup(api, first, a)
            done_b = wait_backup(api, second, b)
            assert done_a["state"] == done_b["state"] == "done"
            assert done_b["completed_at"] - done_a["completed_at"] > 1.0
            # Throttled to about 3 MiB/s: 6 MiB takes about 2 s.
            assert done_a["completed_at"] - done_a["created_at"] > 1.5
            for vol in (first, second):
                api.delete(vol.url)
    finally:
        proc.stop(kill=True)
