"""A volume's containers are an in-memory lookup: prefixes are resolved once, when read.

``Daemon._users`` (disk limits, in-use checks, the file denylist) and
``desired.service.volume_users`` (volume deletion, backups, owners) ask on every file
request; they must not stat every document's volume. Full ids are compared as text (no
resolver call), a prefix is resolved when its document is read or written, and a prefix
that named no volume then is tried again until it does.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from lightd.desired.documents import DesiredContainers, document_name
from lightd.desired.service import volume_users
from lightd.spec.container import ContainerSpec
from lightd.store import DocumentStore

FULL = "0f1e2d3c-4b5a-4987-8654-3210fedcba98"
OTHER = "11111111-2222-4333-8444-555555555555"


def spec(internal_id: str, volume_id: str) -> ContainerSpec:
    return ContainerSpec.model_validate(
        {"internal_id": internal_id, "image": "busybox", "volume_id": volume_id}
    )


def test_prefixes_are_resolved_once_and_lookups_stay_in_memory(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    desired = DesiredContainers(store)
    asked: list[str] = []
    existing = {FULL}

    def resolve(ref: str) -> str | None:
        asked.append(ref)
        matches = [v for v in existing if v.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    desired.resolve_volume = resolve
    desired.write(spec("full", FULL))
    desired.write(spec("upper", FULL.upper()))
    # A hand-edited document with a prefix (GitOps): resolved when the scan reads it.
    (tmp_path / "containers").mkdir(exist_ok=True)
    (tmp_path / document_name("prefix")).write_bytes(
        orjson.dumps(spec("prefix", FULL[:8]).document())
    )
    (tmp_path / document_name("later")).write_bytes(
        orjson.dumps(spec("later", OTHER[:13]).document())
    )
    desired.scan()
    assert sorted(asked) == sorted([FULL[:8], OTHER[:13]])  # full ids: no resolver call
    asked.clear()
    for _ in range(100):
        assert volume_users(desired, FULL) == ["full", "prefix", "upper"]
    assert asked == [OTHER[:13]] * 100  # only the prefix that names no volume yet
    existing.add(OTHER)  # its volume appears: found, and remembered
    asked.clear()
    assert volume_users(desired, OTHER) == ["later"]
    assert volume_users(desired, OTHER) == ["later"]
    assert volume_users(desired, FULL) == ["full", "prefix", "upper"]
    assert asked == [OTHER[:13]]
    desired.remove("prefix")
    assert volume_users(desired, FULL) == ["full", "upper"]
    assert asked == [OTHER[:13]]
