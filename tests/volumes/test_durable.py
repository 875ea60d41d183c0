"""lightd.fs.durable: syncfs(2) on a folder's file system, once per file system; a
file's writeback started early (sync_file_range(2))."""

from __future__ import annotations

import errno
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


def test_start_writeback_passes_its_range_and_refuses_what_the_kernel_refuses(
    tmp_path: Path,
) -> None:
    data = os.urandom(4 << 20)
    fd = os.open(tmp_path / "file", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        durable.start_writeback(fd, 0, 1 << 20)  # real sync_file_range calls
        durable.start_writeback(fd, 1 << 20, 0)
        with pytest.raises(OSError) as negative:  # the offset arrives as the kernel's loff_t
            durable.start_writeback(fd, -1, 0)
        assert negative.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert (tmp_path / "file").read_bytes() == data
    with pytest.raises(OSError) as closed:
        durable.start_writeback(fd, 0, 0)
    assert closed.value.errno == errno.EBADF
    read, write = os.pipe()
    try:
        with pytest.raises(OSError) as pipe:
            durable.start_writeback(write, 0, 0)
        assert pipe.value.errno == errno.ESPIPE
    finally:
        os.close(read)
        os.close(write)
