"""``s3`` backups travel with a transfer when both nodes use the same S3 store.

Two real daemons and the real S3 server of the backup tests (``rclone serve s3``, which
checks signatures; the ``s3`` fixture of :mod:`tests.backups.conftest`). With the same
``backups.s3`` on both nodes, a running container with two ``s3`` backups moves with
``include_backups``: the target lists both (same ids, sizes, checksums), downloads them
byte-identical to the stored objects and restores them, the source lists none, and the
objects stay where they were (only records travel). With a different store on the target
(another prefix), the target refuses at the check pass (409) and nothing moves.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.backups.conftest import ACCESS_KEY, BUCKET, SECRET_KEY, S3Server, s3, snapshot
from tests.transfer.helpers import (
    Nodes,
    backup,
    move_with_backups,
    running_container,
    token_for,
    transfer,
    tree,
    wait_restored,
)

__all__ = ["s3"]  # the module's S3 server fixture


def s3_env(server: S3Server, prefix: str) -> dict[str, str]:
    section = "LIGHTD_BACKUPS__S3__"
    return {
        f"{section}ENDPOINT": server.url,
        f"{section}BUCKET": BUCKET,
        f"{section}PREFIX": prefix,
        f"{section}ACCESS_KEY": ACCESS_KEY,
        f"{section}SECRET_KEY": SECRET_KEY,
        f"{section}PART_SIZE_MIB": "5",
        f"{section}RETRIES": "2",
        f"{section}RETRY_INITIAL_SECONDS": "0.1",
    }


@pytest.fixture
def node_env(request: pytest.FixtureRequest, s3: S3Server) -> dict[str, dict[str, str]]:
    """Both nodes on the S3 server; the target's prefix differs with param ``other``."""
    prefix = f"xfer-{uuid.uuid4().hex[:8]}"
    other = getattr(request, "param", "same") == "other"
    return {
        "source": s3_env(s3, prefix),
        "target": s3_env(s3, f"{prefix}-elsewhere" if other else prefix),
    }


def s3_backup(nodes: Nodes, volume_id: str, name: str) -> dict[str, Any]:
    return backup(nodes.src_api, volume_id, name, adapter="s3")


def stored(server: S3Server, volume_id: str) -> dict[str, str]:
    """The S3 objects of ``volume_id``'s backups: key below the bucket -> SHA-256."""
    root = server.folder / BUCKET
    return {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest()
        for name in server.objects()
        if f"/{volume_id}/" in f"/{name}"
    }


def no_records(data_dir: Path) -> bool:
    records = data_dir / "state" / "backups"
    return not records.exists() or not any(records.iterdir())


def test_s3_backups_move_as_records_to_a_node_on_the_same_store(nodes: Nodes, s3: S3Server) -> None:
    internal_id, volume_id, volume, port = running_container(nodes)
    first_tree = snapshot(volume)  # what a restore keeps: mtimes to the second
    first = s3_backup(nodes, volume_id, "first")
    (volume / "server.properties").write_bytes(b"motd=changed after the first backup\n")
    second = s3_backup(nodes, volume_id, "second")
    objects = stored(s3, volume_id)
    assert len(objects) == 2, objects
    move_with_backups(nodes, internal_id, volume_id, port, [first, second])
    target_volume = Path(nodes.dst.volume_path(volume_id))
    # Records only: the objects are the same ones, untouched; nothing went to local stores.
    assert stored(s3, volume_id) == objects
    assert not any((nodes.target.data_dir / "backups").glob("*.tar.*"))
    # The source lists none (its volume went with the transfer) and keeps no record.
    gone = nodes.src_api.get(f"/volumes/{volume_id}/backups")
    assert gone.status_code == 404 or gone.json()["backups"] == [], gone.text
    assert no_records(nodes.source.data_dir)

    # The target downloads both, byte-identical to their objects and their checksums.
    for original in (first, second):
        download = nodes.dst_api.get(
            f"/volumes/{volume_id}/backups/{original['backup_id']}/download"
        )
        assert download.status_code == 200, download.text
        digest = hashlib.sha256(download.content).hexdigest()
        assert len(download.content) == original["size"]
        assert digest == original["checksum"]
        assert digest in objects.values()
    # And restores them: the first makes the volume exactly what it was then.
    nodes.dst.wait_state(internal_id, "running")
    answer = nodes.dst_api.post(
        f"/volumes/{volume_id}/backups/{first['backup_id']}/restore", json={"truncate": True}
    )
    assert answer.status_code == 202, answer.text
    result = wait_restored(nodes.dst_api, volume_id, first["backup_id"])
    assert result["restore"]["state"] == "done", result
    assert (target_volume / "server.properties").read_bytes() == b"motd=moved\n"
    # (but for ``abs-link``, to /etc/hostname: the restore's extractor skips an escaping
    # link, as decompress does)
    assert first_tree.pop("abs-link") == ("link", "/etc/hostname")
    assert snapshot(target_volume) == first_tree
    nodes.dst.wait_state(internal_id, "running", timeout=60)
    answer = nodes.dst_api.post(
        f"/volumes/{volume_id}/backups/{second['backup_id']}/restore", json={"truncate": False}
    )
    assert answer.status_code == 202, answer.text
    result = wait_restored(nodes.dst_api, volume_id, second["backup_id"])
    assert result["restore"]["state"] == "done", result
    assert (target_volume / "server.properties").read_bytes() == (
        b"motd=changed after the first backup\n"
    )
    nodes.dst.wait_state(internal_id, "running", timeout=60)


@pytest.mark.parametrize("node_env", ["other"], indirect=True)
def test_s3_backups_for_another_store_refuse_the_transfer_up_front(
    nodes: Nodes, s3: S3Server
) -> None:
    internal_id, volume_id, volume, port = running_container(nodes)
    backup = s3_backup(nodes, volume_id, "only")
    before = tree(volume)
    assert nodes.dst_api.post("/network/ports", json=port).status_code == 200
    nodes.dst.ports.append(port["port"])

    outcome = transfer(nodes, internal_id, token_for(nodes, internal_id), include_backups=True)
    assert outcome["state"] == "failed", outcome
    assert "(409)" in outcome["error"] and "same S3 endpoint" in outcome["error"], outcome
    assert outcome["bytes_done"] == 0, outcome  # refused at the check pass: nothing moved
    # The target holds nothing of it; the source still runs it with its backup.
    assert nodes.dst_api.get(f"/containers/{internal_id}").status_code == 404
    assert not (nodes.target.data_dir / "volumes" / volume_id).exists()
    assert no_records(nodes.target.data_dir)
    nodes.src.wait_state(internal_id, "running")
    listed = nodes.src_api.get(f"/volumes/{volume_id}/backups").json()["backups"]
    assert [b["backup_id"] for b in listed] == [backup["backup_id"]]
    assert tree(volume) == before
    assert len(stored(s3, volume_id)) == 1
