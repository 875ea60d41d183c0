"""The archive adapter on S3: a real signature-checking server (``rclone serve s3``).

Multipart upload (5 MiB parts), the object appears only when complete, download and
restore read it back; a wrong secret or an unreachable endpoint fails the backup with a
clear error after the retries and leaves no object; fixed settings make the next work.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import httpx
import orjson

from lightd.backups.s3 import S3Client, S3Config
from tests.backups.conftest import (
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
from tests.support.daemon import DaemonProcess


def s3_settings(server: S3Server) -> S3Config:
    """The S3 settings ``backup_config`` gives a daemon, for a client of the test's own."""
    found = backup_config(Path("/unused"), server)["backups"]["s3"]
    return S3Config(
        endpoint=found["endpoint"],
        region="us-east-1",
        bucket=found["bucket"],
        prefix=found["prefix"],
        access_key=found["access_key"],
        secret_key=found["secret_key"],
        retries=1,
    )


def test_system_offers_s3_once_configured(bk_api: httpx.Client) -> None:
    body = bk_api.get("/system").json()
    adapters = body["backups"]["adapters"]
    assert adapters[:2] == ["archive", "s3"]
    assert ("restic" in adapters) == (body["restic"] is not None)


def test_s3_backup_download_restore(
    bk: DaemonProcess, bk_api: httpx.Client, vol: Vol, s3: S3Server
) -> None:
    make_tree(vol.path, files=20)
    (vol.path / "region.mca").write_bytes(os.urandom(12 * 1024 * 1024))  # three parts
    before = snapshot(vol.path)
    done = run_backup(bk_api, vol, adapter="s3")
    assert done["state"] == "done", done
    key = f"node-a/{vol.id}/{done['backup_id']}.tar.gz"
    assert key in s3.objects()
    stored = (s3.folder / "lightd-backups" / key).read_bytes()
    assert done["size"] == len(stored)
    assert done["checksum"] == hashlib.sha256(stored).hexdigest()
    answer = bk_api.get(f"{vol.url}/backups/{done['backup_id']}/download")
    assert answer.content == stored
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        assert set(tar.getnames()) == set(before)
    (vol.path / "region.mca").unlink()
    (vol.path / "extra").write_text("x")
    assert run_restore(bk_api, vol, done["backup_id"], truncate=True)["restore"]["state"] == "done"
    assert snapshot(vol.path) == before
    assert bk_api.delete(f"{vol.url}/backups/{done['backup_id']}").status_code == 200
    assert key not in s3.objects()


def _daemon(root: Path, s3: S3Server, **s3_changes: object) -> DaemonProcess:
    config = backup_config(root, s3)
    config["backups"]["s3"].update(s3_changes)
    return DaemonProcess(root, env=dict(FAST_RECONCILER), config=config)


def test_wrong_secret_then_fixed(tmp_path: Path, s3: S3Server) -> None:
    proc = _daemon(tmp_path / "d", s3, secret_key="not-the-secret")
    proc.start()
    try:
        with proc.client() as api:
            vol = make_volume(api)
            (vol.path / "a.txt").write_text("a")
            failed = run_backup(api, vol, adapter="s3")
            assert failed["state"] == "failed"
            assert "SignatureDoesNotMatch" in failed["error"], failed
            assert "secret_key" in failed["error"]
            assert not [o for o in s3.objects() if vol.id in o]
        proc.stop()
        proc.config = backup_config(tmp_path / "d", s3)
        proc.start()
        with proc.client() as api:
            done = run_backup(api, vol, adapter="s3")
            assert done["state"] == "done", done
            assert f"node-a/{vol.id}/{done['backup_id']}.tar.gz" in s3.objects()
            api.delete(f"{vol.url}/backups/{done['backup_id']}")
            api.delete(vol.url)
    finally:
        proc.stop(kill=True)


def test_unreachable_endpoint_fails_after_retries(tmp_path: Path, s3: S3Server) -> None:
    proc = _daemon(tmp_path / "d", s3, endpoint="http://127.0.0.1:9", retries=2)
    proc.start()
    try:
        with proc.client() as api:
            vol = make_volume(api)
            (vol.path / "a.txt").write_text("a")
            failed = run_backup(api, vol, adapter="s3")
            assert failed["state"] == "failed"
            assert "unreachable" in failed["error"] and "after 3 attempts" in failed["error"]
            api.delete(vol.url)
    finally:
        proc.stop(kill=True)


def test_interrupted_upload_leaves_no_object(tmp_path: Path, s3: S3Server) -> None:
    config = backup_config(tmp_path / "d", s3, write_limit_mib_s=2)
    proc = DaemonProcess(tmp_path / "d", env=dict(FAST_RECONCILER), config=config)
    proc.start()
    try:
        with proc.client() as api:
            vol = make_volume(api)
            (vol.path / "big.bin").write_bytes(os.urandom(14 * 1024 * 1024))
            backup_id = api.post(f"{vol.url}/backups", json={"adapter": "s3"}).json()["backup_id"]

            def uploading() -> bool:
                body = api.get(f"{vol.url}/backups/{backup_id}").json()
                return bool(body["progress"]["bytes_done"] > 6 * 1024 * 1024)

            from tests.support.daemon import wait_for

            wait_for(uploading, timeout=20, what="a part uploaded")
        proc.stop(kill=True)
        stored = proc.data_dir / "state" / "backups" / f"{backup_id}.json"
        record = orjson.loads(stored.read_bytes())
        upload_id, key = record["upload_id"], record["location"]
        assert upload_id and key
        proc.start()
        with proc.client() as api:
            body = api.get(f"{vol.url}/backups/{backup_id}").json()
            assert body["state"] == "failed" and body["error"] == "Interrupted"
            # lightd aborts the upload in the background after its start: the server
            # forgets it and drops its parts, and no object was ever published.
            client = S3Client(s3_settings(s3))
            try:

                def aborted() -> bool:
                    listing = client.request("GET", "", "uploads=").content
                    assert b"<ListMultipartUploadsResult" in listing, listing[:200]
                    return upload_id.encode() not in listing

                wait_for(aborted, timeout=20, what="the upload aborted")
            finally:
                client.close()
            wait_for(
                lambda: not [o for o in s3.objects() if vol.id in o],
                timeout=10,
                what="no object or part left",
            )
            api.delete(vol.url)
    finally:
        proc.stop(kill=True)
