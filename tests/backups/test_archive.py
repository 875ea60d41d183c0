"""The archive adapter, local: backup, list, show, download, restore, ignore, errors."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import httpx

from tests.backups.conftest import Vol, make_tree, run_backup, run_restore, snapshot
from tests.support.daemon import DaemonProcess


def test_backup_download_and_restore_round_trip(
    bk: DaemonProcess, bk_api: httpx.Client, vol: Vol
) -> None:
    make_tree(vol.path)
    before = snapshot(vol.path)
    done = run_backup(bk_api, vol, name="first")
    assert done["state"] == "done", done
    assert done["adapter"] == "archive" and done["name"] == "first"
    assert done["files"] == len(before)
    assert done["progress"]["bytes_done"] >= done["progress"]["bytes_total"] > 0
    stored = bk.root / "backups" / f"{done['backup_id']}.tar.gz"
    data = stored.read_bytes()
    assert done["size"] == len(data)
    assert done["checksum"] == hashlib.sha256(data).hexdigest()
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".tmp-")]

    # Prefixes of 8+ characters work; unknown ids are 404 with the contract's words.
    short = done["backup_id"][:8]
    assert bk_api.get(f"{vol.url}/backups/{short}").json()["backup_id"] == done["backup_id"]
    missing = bk_api.get(f"{vol.url}/backups/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and missing.json() == {"error": "Backup not found"}

    # The download is the archive, and holds the tree (symlinks as links).
    answer = bk_api.get(f"{vol.url}/backups/{short}/download")
    assert answer.status_code == 200
    assert answer.content == data
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert names["link-to-dir"].issym() and names["link-to-dir"].linkname == "dir1"
    assert set(names) == set(before)

    # truncate: the volume becomes exactly the backup.
    (vol.path / "server.properties").write_text("motd=changed\n")
    (vol.path / "extra.txt").write_text("new")
    (vol.path / "dir0" / "sub0" / "file0.dat").unlink()
    restored = run_restore(bk_api, vol, short, truncate=True)
    assert restored["restore"]["state"] == "done", restored
    assert snapshot(vol.path) == before

    # without truncate: the backup's files replace their namesakes, others stay.
    (vol.path / "server.properties").write_text("motd=changed again\n")
    (vol.path / "extra.txt").write_text("stays")
    restored = run_restore(bk_api, vol, short)
    assert restored["restore"]["state"] == "done", restored
    after = snapshot(vol.path)
    assert (vol.path / "extra.txt").read_text() == "stays"
    assert (vol.path / "server.properties").read_text() == "motd=hello\n"
    del after["extra.txt"]
    assert after == before
    assert not [p for p in vol.path.parent.iterdir() if p.name.startswith(".lightd-restore-")]
    assert not [p for p in vol.path.iterdir() if p.name.startswith(".lightd-tmp-")]


def test_list_newest_first_and_delete(bk: DaemonProcess, bk_api: httpx.Client, vol: Vol) -> None:
    (vol.path / "a.txt").write_text("a")
    first = run_backup(bk_api, vol)
    second = run_backup(bk_api, vol)
    listed = bk_api.get(f"{vol.url}/backups").json()["backups"]
    assert [b["backup_id"] for b in listed] == [second["backup_id"], first["backup_id"]]
    gone = bk_api.delete(f"{vol.url}/backups/{first['backup_id']}")
    assert gone.status_code == 200, gone.text
    assert not (bk.root / "backups" / f"{first['backup_id']}.tar.gz").exists()
    assert bk_api.get(f"{vol.url}/backups/{first['backup_id']}").status_code == 404
    assert [b["backup_id"] for b in bk_api.get(f"{vol.url}/backups").json()["backups"]] == [
        second["backup_id"]
    ]


def test_ignore_patterns_and_lightdignore(bk_api: httpx.Client, vol: Vol) -> None:
    for name in ("keep.txt", "logs/latest.log", "logs/old/1.log", "cache/x.bin", "world/a.mca"):
        path = vol.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (vol.path / ".lightdignore").write_text("# comment\ncache/\n")
    done = run_backup(bk_api, vol, ignore=["logs/", "*.mca", "!world/"])
    assert done["state"] == "done", done
    answer = bk_api.get(f"{vol.url}/backups/{done['backup_id']}/download")
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        names = sorted(tar.getnames())
    assert names == [".lightdignore", "keep.txt", "world"]


def test_bad_requests(bk_api: httpx.Client, vol: Vol) -> None:
    bad = bk_api.post(f"{vol.url}/backups", json={"adapter": "zip"})
    assert bad.status_code == 400
    bad = bk_api.post(f"{vol.url}/backups", json={"unknown": 1})
    assert bad.status_code == 400
    assert bk_api.get(f"{vol.url}/backups/short").status_code == 400
    assert bk_api.get("/volumes/00000000-0000-4000-8000-000000000000/backups").status_code == 404
    assert bk_api.get(f"{vol.url}/backups").json() == {"backups": []}


def test_tampered_archive_is_refused_and_volume_kept(
    bk: DaemonProcess, bk_api: httpx.Client, vol: Vol
) -> None:
    (vol.path / "world.txt").write_text("precious")
    done = run_backup(bk_api, vol)
    stored = bk.root / "backups" / f"{done['backup_id']}.tar.gz"
    hostile = io.BytesIO()
    with tarfile.open(fileobj=hostile, mode="w:gz") as tar:
        for name in ("ok.txt", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    stored.write_bytes(hostile.getvalue())
    for truncate in (False, True):
        result = run_restore(bk_api, vol, done["backup_id"], truncate=truncate)
        assert result["restore"]["state"] == "failed"
        assert "refused" in result["restore"]["error"], result
        assert sorted(os.listdir(vol.path)) == ["world.txt"]
        assert not (vol.path.parent / "escaped.txt").exists()
    assert not [p for p in vol.path.parent.iterdir() if p.name.startswith(".lightd-restore-")]


def test_links_are_stored_never_followed(bk_api: httpx.Client, vol: Vol, tmp_path: Path) -> None:
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("never in a backup")
    os.symlink(str(outside), vol.path / "to-secret")
    os.symlink("/", vol.path / "to-root")
    (vol.path / ".lightd-tmp-leftover").write_text("skipped")
    (vol.path / "real.txt").write_text("real")
    for adapter in ("archive", "restic"):
        done = run_backup(bk_api, vol, adapter=adapter)
        assert done["state"] == "done", done
        answer = bk_api.get(f"{vol.url}/backups/{done['backup_id']}/download")
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert sorted(members) == ["real.txt", "to-root", "to-secret"], adapter
            assert members["to-secret"].issym()
            assert members["to-secret"].linkname == str(outside)
            assert members["to-root"].issym()
