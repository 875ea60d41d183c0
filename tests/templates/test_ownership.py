"""Files that arrive in a volume by a backup restore or a transfer belong to its container user.

Real daemons, real files, ``os.stat``: a restore hands what it wrote to the volume's
container user (the owner the file API uses); a transfer's target hands the volume it
moved in to the document's user once and records it, so its first reconcile does not
walk the tree again.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson

from tests.support.daemon import wait_for
from tests.support.lab import Lab
from tests.transfer.conftest import node_env, nodes  # noqa: F401  (the two-daemon fixture)
from tests.transfer.helpers import Nodes, running_container, token_for, transfer

USER = (988, 988)


def owners(volume: Path) -> dict[str, tuple[int, int]]:
    found = {".": (os.stat(volume).st_uid, os.stat(volume).st_gid)}
    for folder, dirs, files in os.walk(volume):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            found[str(path.relative_to(volume))] = (info.st_uid, info.st_gid)
    return found


def wait_restored(api: httpx.Client, volume_id: str, backup_id: str) -> dict[str, object]:
    def ended() -> dict[str, object] | None:
        body = api.get(f"/volumes/{volume_id}/backups/{backup_id}").json()
        return body if body["restore"]["state"] != "running" else None

    return dict(wait_for(ended, timeout=60, interval=0.2, what="the restore to end"))


def test_a_restore_leaves_files_owned_by_the_container_user(lab: Lab, api: httpx.Client) -> None:
    volume_id = lab.volume()
    internal_id = lab.create("restore", volume_id=volume_id)
    lab.wait_state(internal_id, "running")
    volume = Path(lab.volume_path(volume_id))
    assert owners(volume)["."] == USER  # handed over before the first start
    for path in ("world/level.dat", "plugins/a/config.yml", "server.properties"):
        written = api.post(f"/volumes/{volume_id}/files", json={"path": path, "content": path})
        assert written.status_code == 200, written.text
    started = api.post(f"/volumes/{volume_id}/backups", json={})
    assert started.status_code == 202, started.text
    backup_id = started.json()["backup_id"]
    wait_for(
        lambda: api.get(f"/volumes/{volume_id}/backups/{backup_id}").json()["state"] == "done",
        timeout=60,
        what="the backup",
    )
    # Meanwhile root (a hand edit, an old daemon) owns everything, and a file is gone.
    for path in owners(volume):
        os.chown(volume / path, 0, 0, follow_symlinks=False)
    (volume / "server.properties").unlink()
    answer = api.post(f"/volumes/{volume_id}/backups/{backup_id}/restore", json={"truncate": True})
    assert answer.status_code == 202, answer.text
    restored = wait_restored(api, volume_id, backup_id)
    assert restored["restore"]["state"] == "done", restored  # type: ignore[index]
    found = owners(volume)
    assert {"server.properties", "world/level.dat", "plugins/a/config.yml"} <= set(found)
    assert found == dict.fromkeys(found, USER), found
    lab.wait_state(internal_id, "running")  # the container was stopped for it, and runs again


def test_a_transferred_volume_is_handed_to_the_user_once(nodes: Nodes) -> None:  # noqa: F811
    internal_id, volume_id, volume, port = running_container(nodes)
    # Something the source's user does not own (a hand copy as root): it moves as it is.
    (volume / "root-owned.txt").write_text("root")
    assert os.stat(volume / "root-owned.txt").st_uid == 0
    target_pool = nodes.dst_api.post("/network/ports", json=port)
    assert target_pool.status_code == 200, target_pool.text
    nodes.dst.ports.append(port["port"])
    outcome = transfer(nodes, internal_id, token_for(nodes, internal_id))
    assert outcome["state"] == "completed", outcome
    assert nodes.dst.get(internal_id)["state"] == "running"
    moved = Path(nodes.dst.volume_path(volume_id))
    found = owners(moved)
    assert "root-owned.txt" in found and "world/region/r.0.0.mca" in found
    assert found == dict.fromkeys(found, USER), found
    # Recorded once: the target's observed state names the owner, given while unpacking
    # (no walk after it), and its reconcile did not hand the volume over again.
    state = orjson.loads(
        (nodes.target.data_dir / "state" / "containers" / f"{internal_id}.json").read_bytes()
    )
    assert state["volume_owner"] == "988:988"
    log = nodes.target.log()
    assert log.count("transferred volume unpacked as 988:988") == 1
    assert "transferred volume handed to" not in log
    assert f"{internal_id}: volume handed to" not in log
