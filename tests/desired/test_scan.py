"""A scan after file events reads only the files whose identity changed (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from lightd.desired.documents import DesiredContainers, document_name
from lightd.spec.container import ContainerSpec
from lightd.store import DocumentStore


def spec(internal_id: str, image: str = "lightd-test/busybox:latest") -> ContainerSpec:
    return ContainerSpec.model_validate(
        {
            "internal_id": internal_id,
            "image": image,
            "volume_id": "a" * 32,
            "startup_command": "exec sleep 1000",
        }
    )


class CountingStore(DocumentStore):
    """A real document store that counts document reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read_bytes(self, name: str) -> bytes | None:
        self.reads.append(name)
        return super().read_bytes(name)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[CountingStore, DesiredContainers]:
    store = CountingStore(tmp_path)
    desired = DesiredContainers(store)
    for index in range(20):
        desired.write(spec(f"doc-{index:02d}"))
    desired.scan()
    store.reads.clear()
    return store, desired


def test_a_scan_after_file_events_reads_only_the_changed_file(
    folder: tuple[CountingStore, DesiredContainers],
) -> None:
    store, desired = folder
    path = store.path_of(document_name("doc-07"))
    edited = orjson.loads(path.read_bytes())
    edited["image"] = "lightd-test/other:latest"
    path.write_bytes(orjson.dumps(edited))  # in place, as an editor without rename does
    result = desired.scan(full=False)
    assert store.reads == [document_name("doc-07")]
    assert result.changed == {"doc-07"}
    found = desired.get("doc-07")
    assert found is not None and found.image == "lightd-test/other:latest"


def test_writes_through_lightd_are_not_read_again(
    folder: tuple[CountingStore, DesiredContainers],
) -> None:
    store, desired = folder
    desired.write(spec("doc-03", image="lightd-test/new:latest"))
    store.reads.clear()
    assert desired.scan(full=False).changed == set()
    assert store.reads == []


def test_a_full_scan_reads_every_file_and_finds_a_same_stat_edit(
    folder: tuple[CountingStore, DesiredContainers],
) -> None:
    store, desired = folder
    path = store.path_of(document_name("doc-11"))
    info = path.stat()
    raw = path.read_bytes()
    # Same size, times put back: only a full scan can see this edit.
    path.write_bytes(raw.replace(b"sleep 1000", b"sleep 2000"))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    result = desired.scan(full=True)
    assert len(store.reads) == 20
    assert result.changed == {"doc-11"}


def test_a_deleted_file_is_gone_without_reading_the_others(
    folder: tuple[CountingStore, DesiredContainers],
) -> None:
    store, desired = folder
    store.path_of(document_name("doc-05")).unlink()
    result = desired.scan(full=False)
    assert result.gone == {"doc-05"}
    assert store.reads == []
