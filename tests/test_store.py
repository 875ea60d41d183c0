"""The document store: canonical encoding, no-change detection, atomicity under SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from lightd.errors import InvalidField
from lightd.store import DocumentStore
from lightd.store.documents import TEMP_SUFFIX
from tests.support.daemon import REPO


def test_canonical_encoding(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.write("a/doc.json", {"b": 1, "a": {"y": [1, 2], "x": "é"}})
    assert (tmp_path / "a" / "doc.json").read_bytes() == (
        b'{\n  "a": {\n    "x": "\xc3\xa9",\n    "y": [\n      1,\n      2\n    ]\n'
        b'  },\n  "b": 1\n}\n'
    )


def test_identical_content_is_no_change(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    assert store.write("doc.json", {"a": 1}) is True
    inode = (tmp_path / "doc.json").stat().st_ino
    mtime = (tmp_path / "doc.json").stat().st_mtime_ns
    assert store.write("doc.json", {"a": 1}) is False
    assert (tmp_path / "doc.json").stat().st_ino == inode
    assert (tmp_path / "doc.json").stat().st_mtime_ns == mtime
    assert store.write("doc.json", {"a": 2}) is True


def test_durable_writes_fsync_and_rebuildable_records_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    store = DocumentStore(tmp_path)
    store.write("desired.json", {"a": 1})
    assert len(synced) == 2  # the file, then its folder
    synced.clear()
    assert store.write("observed.json", {"a": 1}, durable=False) is True
    assert synced == []
    assert store.read("observed.json") == {"a": 1}
    assert store.write("observed.json", {"a": 1}, durable=False) is False
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_hand_edit_is_seen_by_next_write(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.write("doc.json", {"a": 1})
    (tmp_path / "doc.json").write_text('{"a": 2}')
    assert store.write("doc.json", {"a": 1}) is True
    assert store.read("doc.json") == {"a": 1}


def test_names_skip_temp_and_hidden(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.write("c/one.json", {})
    (tmp_path / "c" / f".one.json.x{TEMP_SUFFIX}").write_text("{")
    (tmp_path / "c" / "notes.txt").write_text("x")
    assert store.names("c") == ["c/one.json"]
    assert store.sweep_temp_files() == 1
    assert sorted(os.listdir(tmp_path / "c")) == ["notes.txt", "one.json"]


@pytest.mark.parametrize("name", ["../x.json", "/etc/passwd", "a/../../x", "", "a\x00b"])
def test_names_cannot_escape(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidField):
        DocumentStore(tmp_path).path_of(name)


def test_delete(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.write("doc.json", {})
    assert store.delete("doc.json") is True
    assert store.delete("doc.json") is False
    assert store.read("doc.json") is None


WRITER = """
import sys
from pathlib import Path
from lightd.store import DocumentStore
store = DocumentStore(Path(sys.argv[1]))
big_a = {"version": "a", "payload": ["a" * 100] * 5000}
big_b = {"version": "b", "payload": ["b" * 100] * 7000}
print("ready", flush=True)
while True:
    store.write("doc.json", big_a)
    store.write("doc.json", big_b)
"""


def test_killed_writer_leaves_old_or_new_document(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.write("doc.json", {"version": "a", "payload": ["a" * 100] * 5000})
    rng = random.Random(1234)
    seen = set()
    for _ in range(25):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        document = orjson.loads((tmp_path / "doc.json").read_bytes())
        assert document["version"] in {"a", "b"}
        expected = 5000 if document["version"] == "a" else 7000
        assert document["payload"] == [document["version"] * 100] * expected
        seen.add(document["version"])
    store.sweep_temp_files()
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]
    assert seen == {"a", "b"}
