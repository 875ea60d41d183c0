"""Backups travel with a transfer (``include_backups``) between two real daemons.

A running container with two ``archive`` backups moves: the target lists both (same
ids, sizes, checksums), their archives are byte-identical in its local store, a restore
of the older one works there, and the source keeps neither records nor files. A
backup the target cannot hold (an ``s3`` record for another store) is refused at the
check pass, before any data; a corrupted backup archive is refused on its checksum
and leaves nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import httpx
import orjson

from lightd.fs.beneath import Root
from lightd.transfer.stream import frame, pack
from tests.support import engine
from tests.support.daemon import wait_for
from tests.transfer.helpers import (
    PROTOCOL,
    Nodes,
    backup,
    move_with_backups,
    running_container,
    token_for,
    wait_restored,
)


def archives(data_dir: Path) -> dict[str, str]:
    folder = data_dir / "backups"
    if not folder.is_dir():
        return {}
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.iterdir()
        if path.is_file()
    }


def test_two_backups_move_with_the_container_and_restore_there(nodes: Nodes) -> None:
    internal_id, volume_id, volume, port = running_container(nodes)
    first = backup(nodes.src_api, volume_id, "first")
    (volume / "server.properties").write_bytes(b"motd=changed after the first backup\n")
    second = backup(nodes.src_api, volume_id, "second")
    stored = archives(nodes.source.data_dir)
    assert len(stored) == 2, stored
    move_with_backups(nodes, internal_id, volume_id, port, [first, second])
    assert archives(nodes.target.data_dir) == stored  # byte-identical archives
    # The source keeps neither the records nor the files.
    assert archives(nodes.source.data_dir) == {}
    records = nodes.source.data_dir / "state" / "backups"
    assert not records.exists() or not any(records.iterdir())
    # A restore of the older backup works on the target.
    target_volume = Path(nodes.dst.volume_path(volume_id))
    nodes.dst.wait_state(internal_id, "running")
    answer = nodes.dst_api.post(
        f"/volumes/{volume_id}/backups/{first['backup_id']}/restore", json={"truncate": False}
    )
    assert answer.status_code == 202, answer.text

    result = wait_restored(nodes.dst_api, volume_id, first["backup_id"])
    assert result["restore"]["state"] == "done", result
    assert (target_volume / "server.properties").read_bytes() == b"motd=moved\n"
    nodes.dst.wait_state(internal_id, "running", timeout=60)


def raw_send(nodes: Nodes, internal_id: str, token: str, body: bytes, phase: str) -> httpx.Response:
    headers = {
        "Accept": "application/vnd.pkglatv1+json",
        "X-Lightd-Internal-Id": internal_id,
        "Authorization": f"Bearer {token}",
        "X-Lightd-Transfer-Pass": phase,
    }
    return httpx.post(
        f"{nodes.target.base_url}/transfers", content=body, headers=headers, timeout=30
    )


def record(volume_id: str, adapter: str, backup_id: str, data: bytes = b"") -> dict[str, Any]:
    return {
        "backup_id": backup_id,
        "volume_id": volume_id,
        "name": "b",
        "adapter": adapter,
        "state": "done",
        "size": len(data),
        "checksum": hashlib.sha256(data).hexdigest(),
        "created_at": 1_700_000_000.0,
        "location": f"{backup_id}.tar.gz" if adapter == "archive" else f"k/{backup_id}",
    }


def staging_empty(nodes: Nodes) -> bool:
    staging = nodes.target.data_dir / "transfer-staging"
    return not staging.exists() or not any(staging.iterdir())


def test_backups_the_target_cannot_hold_or_verify_are_refused(nodes: Nodes, tmp_path: Path) -> None:
    internal_id = f"{nodes.src.prefix}-raw"
    volume_id = "0badc0de-0000-4000-8000-0000000000b1"
    doc = {
        "internal_id": internal_id,
        "image": engine.TEST_IMAGE,
        "volume_id": volume_id,
        "startup_command": "sleep 100",
        "power": "stopped",
    }
    s3 = record(volume_id, "s3", "11111111-2222-4333-8444-555555555555")
    manifest = {
        **PROTOCOL,
        "transfer_id": "abc1230000000b01",
        "compression": "zstd",
        "document": doc,
        "backups": {"records": [s3], "s3_store": "http://elsewhere/bucket/"},
    }
    token = token_for(nodes, internal_id)
    checked = raw_send(nodes, internal_id, token, frame(b"M", orjson.dumps(manifest)), "check")
    assert checked.status_code == 409, checked.text
    assert "same S3 endpoint" in checked.json()["error"]
    # A volume stream that verifies, then a backup archive that does not.
    tree_dir = tmp_path / "tree"
    tree_dir.mkdir()
    (tree_dir / "a.txt").write_bytes(b"hello")
    volume_bytes = bytearray()
    with Root(tree_dir) as root:
        pack(root, volume_bytes.extend)
    data = os.urandom(50_000)
    archive = record(volume_id, "archive", "22222222-3333-4444-8555-666666666666", data)
    manifest["backups"] = {"records": [archive], "s3_store": None}
    end = {"sha256": hashlib.sha256(volume_bytes).hexdigest(), "bytes": len(volume_bytes)}
    body = io.BytesIO()
    body.write(frame(b"M", orjson.dumps(manifest)))
    body.write(frame(b"D", bytes(volume_bytes)))
    body.write(frame(b"E", orjson.dumps(end)))
    body.write(frame(b"B", orjson.dumps({"backup_id": archive["backup_id"]})))
    body.write(frame(b"D", bytes([data[0] ^ 1]) + data[1:]))
    sums = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    body.write(frame(b"E", orjson.dumps(sums)))
    answer = raw_send(nodes, internal_id, token_for(nodes, internal_id), body.getvalue(), "only")
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "Transfer refused: checksum mismatch"}
    assert nodes.dst_api.get(f"/containers/{internal_id}").status_code == 404
    assert not (nodes.target.data_dir / "volumes" / volume_id).exists()
    assert archives(nodes.target.data_dir) == {}
    wait_for(lambda: staging_empty(nodes), timeout=10, what="staging removed")
