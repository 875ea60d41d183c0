"""The restic adapter with Debian's restic: local and ``s3:`` repositories.

A second backup after changing 1 % of the files adds a small fraction (restic's own
``data_added``); restores are byte-identical; downloads are the tree as tar.gz; delete
forgets the snapshot; a kill -9 mid backup leaves no snapshot; ``GET /system`` reports
the version.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.backups.conftest import (
    BUCKET,
    S3Server,
    Vol,
    backup_config,
    make_tree,
    make_volume,
    run_backup,
    run_restore,
    snapshot,
)
from tests.conftest import FAST_RECONCILER
from tests.support.daemon import DaemonProcess, wait_for


def snapshots(proc: DaemonProcess, repository: str, env: dict[str, str] | None = None) -> Any:
    out = subprocess.run(
        ["restic", "snapshots", "--json", "--no-lock"],
        env={
            **os.environ,
            **(env or {}),
            "RESTIC_REPOSITORY": repository,
            "RESTIC_PASSWORD_FILE": str(proc.data_dir / "restic-password"),
        },
        capture_output=True,
        check=True,
    ).stdout
    return orjson.loads(out)


def test_restic_incremental_restore_download_delete(
    bk: DaemonProcess, bk_api: httpx.Client, vol: Vol
) -> None:
    rnd = random.Random(7)
    for index in range(100):
        (vol.path / f"region-{index}.mca").write_bytes(rnd.randbytes(400 * 1024))
        # Whole seconds: restic's dump (the restore source) rounds mtimes to the nearest.
        os.utime(vol.path / f"region-{index}.mca", (1_690_000_000 + index, 1_690_000_000 + index))
    make_tree(vol.path, files=10)
    before = snapshot(vol.path)
    first = run_backup(bk_api, vol, adapter="restic")
    assert first["state"] == "done", first
    assert first["data_added"] > 30 * 1024 * 1024
    assert first["files"] == len(before)
    password = bk.data_dir / "restic-password"
    assert password.stat().st_mode & 0o777 == 0o600

    (vol.path / "region-42.mca").write_bytes(rnd.randbytes(400 * 1024))  # 1 % of the files
    os.utime(vol.path / "region-42.mca", (1_700_000_000, 1_700_000_000))
    second = run_backup(bk_api, vol, adapter="restic")
    assert second["state"] == "done", second
    assert second["data_added"] < first["data_added"] * 0.1, (first, second)
    changed = snapshot(vol.path)

    repository = str(bk.root / "restic-repo")
    tags = [s["tags"] for s in snapshots(bk, repository)]
    assert [first["backup_id"]] in tags and [second["backup_id"]] in tags

    # Download: the snapshot as tar.gz.
    answer = bk_api.get(f"{vol.url}/backups/{second['backup_id']}/download")
    assert answer.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
        assert set(tar.getnames()) == set(changed)

    # Restore the first (truncate) then the second (merge): byte-identical.
    (vol.path / "extra.txt").write_text("x")
    assert run_restore(bk_api, vol, first["backup_id"], truncate=True)["restore"]["state"] == "done"
    assert snapshot(vol.path) == before
    assert run_restore(bk_api, vol, second["backup_id"])["restore"]["state"] == "done"
    assert snapshot(vol.path) == changed

    assert bk_api.delete(f"{vol.url}/backups/{first['backup_id']}").status_code == 200
    tags = [s["tags"] for s in snapshots(bk, repository)]
    assert [first["backup_id"]] not in tags and [second["backup_id"]] in tags


def test_system_reports_restic_version(bk_api: httpx.Client) -> None:
    assert bk_api.get("/system").json()["restic"] == "0.14.0"


def test_restic_on_s3(tmp_path: Path, s3: S3Server) -> None:
    repository = f"s3:{s3.url}/{BUCKET}/restic-{tmp_path.name}"
    config = backup_config(tmp_path / "d", s3, restic={"repository": repository})
    proc = DaemonProcess(tmp_path / "d", env=dict(FAST_RECONCILER), config=config)
    proc.start()
    try:
        with proc.client() as api:
            vol = make_volume(api)
            make_tree(vol.path, files=20)
            before = snapshot(vol.path)
            done = run_backup(api, vol, adapter="restic")
            assert done["state"] == "done", done
            assert any(o.startswith(f"restic-{tmp_path.name}/snapshots/") for o in s3.objects())
            (vol.path / "server.properties").unlink()
            restored = run_restore(api, vol, done["backup_id"], truncate=True)
            assert restored["restore"]["state"] == "done", restored
            assert snapshot(vol.path) == before
            api.delete(vol.url)
    finally:
        proc.stop(kill=True)


def test_kill_during_restic_backup_leaves_no_snapshot(tmp_path: Path) -> None:
    repository = str(tmp_path / "repo")
    config = backup_config(tmp_path / "d", write_limit_mib_s=2, restic={"repository": repository})
    proc = DaemonProcess(tmp_path / "d", env=dict(FAST_RECONCILER), config=config)
    proc.start()
    try:
        with proc.client() as api:
            vol = make_volume(api)
            (vol.path / "big.bin").write_bytes(os.urandom(16 * 1024 * 1024))
            backup_id = api.post(f"{vol.url}/backups", json={"adapter": "restic"}).json()[
                "backup_id"
            ]

            def moving() -> bool:
                body = api.get(f"{vol.url}/backups/{backup_id}").json()
                return bool(body["progress"]["bytes_done"] > 2 * 1024 * 1024)

            wait_for(moving, timeout=30, what="restic backup running")
        proc.stop(kill=True)
        # restic dies with lightd (PR_SET_PDEATHSIG): no snapshot can complete later.
        proc.start()
        with proc.client() as api:
            body = api.get(f"{vol.url}/backups/{backup_id}").json()
            assert body["state"] == "failed" and body["error"] == "Interrupted"
            assert snapshots(proc, repository) == []
            done = run_backup(api, vol, adapter="restic")  # the stale lock is no obstacle
            assert done["state"] == "done", done
            api.delete(vol.url)
    finally:
        proc.stop(kill=True)


def test_empty_volume_every_adapter(bk_api: httpx.Client, vol: Vol) -> None:
    for adapter in ("archive", "s3", "restic"):
        done = run_backup(bk_api, vol, adapter=adapter)
        assert done["state"] == "done", (adapter, done["error"])
        assert done["files"] == 0
        answer = bk_api.get(f"{vol.url}/backups/{done['backup_id']}/download")
        with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
            assert tar.getnames() == [], adapter
        (vol.path / "later.txt").write_text("x")
        restored = run_restore(bk_api, vol, done["backup_id"], truncate=True)
        assert restored["restore"]["state"] == "done", (adapter, restored)
        assert os.listdir(vol.path) == []
