"""Group commit of durable writes: writers that arrive together share fsyncs, each
returns only after its own document is durable, and one failure fails only its writer."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from lightd.errors import StoreError
from lightd.store import DocumentStore

WRITERS = 12


class SyncLog:
    """os.fsync that records the inode it made durable; the first call waits until
    ``queued`` says the other writers are waiting (so that they form one group)."""

    def __init__(self, queued: threading.Event | None = None) -> None:
        self.inodes: list[int] = []
        self.calls = 0
        self._queued = queued
        self._real = os.fsync
        self._guard = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self._guard:
            self.calls += 1
            first = self.calls == 1
        if first and self._queued is not None:
            assert self._queued.wait(10), "the other writers never queued"
        self._real(fd)
        with self._guard:
            self.inodes.append(os.fstat(fd).st_ino)


def _queue_watch(store: DocumentStore, waiting: int) -> threading.Event:
    """Set once ``waiting`` writers wait behind the leader's group."""
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with store._group_guard:
                if len(store._group) >= waiting:
                    done.set()
                    return
            time.sleep(0.001)

    threading.Thread(target=watch, daemon=True).start()
    return done


def _write_all(
    store: DocumentStore, names: list[str], sync: SyncLog
) -> dict[str, BaseException | bool]:
    results: dict[str, BaseException | bool] = {}

    def one(name: str) -> None:
        try:
            results[name] = store.write(name, {"name": name})
        except BaseException as exc:
            results[name] = exc

    first = threading.Thread(target=one, args=(names[0],))
    first.start()
    deadline = time.monotonic() + 10
    while sync.calls == 0 and time.monotonic() < deadline:  # the leader is in its fsync
        time.sleep(0.001)
    others = [threading.Thread(target=one, args=(name,)) for name in names[1:]]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(20)
    return results


def _grouping_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[DocumentStore, SyncLog]:
    """A store with a ``containers`` folder whose fsyncs are logged (and held until the
    other writers queue behind the leader)."""
    store = DocumentStore(tmp_path)
    (tmp_path / "containers").mkdir()
    sync = SyncLog(_queue_watch(store, WRITERS - 1))
    monkeypatch.setattr(os, "fsync", sync)
    return store, sync


def test_concurrent_writers_share_fsyncs_and_each_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sync = _grouping_store(tmp_path, monkeypatch)
    names = [f"containers/c{index:02d}.json" for index in range(WRITERS)]
    results = _write_all(store, names, sync)
    assert results == dict.fromkeys(names, True)
    for name in names:
        path = tmp_path / name
        assert store.read(name) == {"name": name}
        assert path.stat().st_ino in sync.inodes  # its content was fsynced
    assert (tmp_path / "containers").stat().st_ino in sync.inodes  # and its folder
    # The leader's group (its file, its folder), then one group of the other eleven:
    # one fsync per file and one folder fsync, not two fsyncs per write.
    assert store.groups == 2
    assert sync.calls == WRITERS + 2 < 2 * WRITERS
    assert store.group_fsyncs == sync.calls
    assert not list(tmp_path.rglob("*.lightd-tmp"))


def test_one_failing_document_does_not_lose_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sync = _grouping_store(tmp_path, monkeypatch)
    real_replace = os.replace
    broken = "containers/broken.json"

    def replace(src: str, dst: object) -> None:
        if str(dst).endswith(broken):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    names = [f"containers/c{index:02d}.json" for index in range(WRITERS - 1)]
    names.insert(WRITERS // 2, broken)  # in the same group as the others
    results = _write_all(store, names, sync)
    failed = results.pop(broken)
    assert isinstance(failed, StoreError), failed
    assert "Input/output error" in failed.message
    assert not (tmp_path / broken).exists()
    assert not list(tmp_path.rglob("*.lightd-tmp"))  # its temp file is gone
    assert results == {name: True for name in names if name != broken}
    for name in results:
        assert store.read(name) == {"name": name}
        assert (tmp_path / name).stat().st_ino in sync.inodes
    assert store.groups == 2  # the failure was inside the group of the others


def test_a_writer_of_one_document_waits_for_the_earlier_one(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    versions = list(range(40))
    threads = [threading.Thread(target=store.write, args=("doc.json", {"v": v})) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert store.read("doc.json")["v"] in versions
    assert store.write("doc.json", {"v": "last"}) is True
    assert store.read("doc.json") == {"v": "last"}
