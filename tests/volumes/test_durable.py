"""lightd.fs.durable: syncfs(2) on a folder's file system, once per file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightd.fs import durable


def test_sync_filesystem_flushes_a_folder_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(os.urandom(1 << 20))
    durable.sync_filesystem(tmp_path)  # a real syncfs on the test's file system
    with pytest.raises(NotADirectoryError):
        durable.sync_filesystem(tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        durable.sync_filesystem(tmp_path / "missing")


def test_sync_filesystems_flushes_each_file_system_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = durable.sync_filesystem
    monkeypatch.setattr(durable, "sync_filesystem", lambda p: (synced.append(p), real(p)))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shm = Path("/dev/shm")
    paths = [tmp_path / "a", tmp_path / "b"] + ([shm] if shm.is_dir() else [])
    durable.sync_filesystems(paths)
    devices = {os.stat(p).st_dev for p in paths}
    assert len(synced) == len(devices)
    assert synced[0] == tmp_path / "a"
