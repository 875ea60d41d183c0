"""Transfers between two real lightd daemons sharing the Docker engine (non-live mode).

A running container with a filled volume moves from the source to the target: the target
runs it, the source keeps nothing, every file is byte-identical with its mode, mtime and
links. Refusals leave the source authoritative and running: a target pool without the
port, a reused token, an expired token, a corrupted stream (checked at the target).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lightd.transfer.stream import frame
from tests.support import engine
from tests.support.daemon import wait_for
from tests.support.ws import Watcher
from tests.transfer.helpers import (
    PROTOCOL,
    Nodes,
    fill,
    running_container,
    start_transfer,
    target_clean,
    token_for,
    transfer,
    tree,
    wait_ended,
    wait_phase,
)


def test_a_running_container_moves(nodes: Nodes) -> None:
    internal_id, volume_id, volume, port = running_container(nodes)
    before = tree(volume)
    target_pool = nodes.dst_api.post("/network/ports", json=port)
    assert target_pool.status_code == 200, target_pool.text
    nodes.dst.ports.append(port["port"])
    outcome = transfer(nodes, internal_id, token_for(nodes, internal_id))
    assert outcome["state"] == "completed", outcome
    assert outcome["role"] == "source" and outcome["error"] is None
    assert outcome["bytes_done"] > 3 * 1024 * 1024  # random data does not compress
    moved = nodes.dst.get(internal_id)
    assert moved["state"] == "running"
    assert moved["install_state"] == "ready"  # the observed install state came along
    assert moved["volume_id"] == volume_id
    target_volume = Path(nodes.dst.volume_path(volume_id))
    assert tree(target_volume) == before  # not installed again over the copy
    # Every entry went to the container's user while it was unpacked: no walk after it.
    entries = [target_volume, *target_volume.rglob("*")]
    assert {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in entries} == {(988, 988)}
    assert f"{internal_id}: transferred volume unpacked as 988:988" in nodes.target.log()
    assert f"{internal_id}: transferred volume handed to" not in nodes.target.log()
    # The source has nothing left: document, Docker object, volume.
    assert nodes.src_api.get(f"/containers/{internal_id}").status_code == 404
    wait_for(lambda: not volume.exists(), timeout=30, what="the source volume gone")
    source_node = (nodes.source.data_dir / "node.id").read_text().strip()
    with engine.client() as docker_client:

        def source_objects() -> list[Any]:
            return list(
                docker_client.api.containers(
                    all=True, filters={"label": [f"io.lightd.node={source_node}"]}
                )
            )

        wait_for(lambda: not source_objects(), timeout=30, what="the source container gone")
    assert nodes.dst_api.get(f"/volumes/{volume_id}").status_code == 200


def test_a_target_without_the_port_refuses_and_the_source_runs_on(nodes: Nodes) -> None:
    internal_id, volume_id, volume, _port = running_container(nodes)
    before = tree(volume)
    outcome = transfer(nodes, internal_id, token_for(nodes, internal_id))
    assert outcome["state"] == "failed"
    assert "Invalid port binding: port not in network pool" in outcome["error"]
    nodes.src.wait_state(internal_id, "running")
    assert nodes.src.get(internal_id)["power"] == "running"
    assert tree(volume) == before
    assert nodes.dst_api.get(f"/containers/{internal_id}").status_code == 404
    assert not (nodes.target.data_dir / "volumes" / volume_id).exists()
    staging = nodes.target.data_dir / "transfer-staging"
    assert not staging.exists() or not any(staging.iterdir())


def raw_send(nodes: Nodes, internal_id: str, token: str, body: bytes) -> httpx.Response:
    headers = {"Accept": "application/vnd.pkglatv1+json", "X-Lightd-Internal-Id": internal_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(
        f"{nodes.target.base_url}/transfers", content=body, headers=headers, timeout=30
    )


def document(nodes: Nodes, internal_id: str) -> dict[str, Any]:
    return {
        "internal_id": internal_id,
        "image": engine.TEST_IMAGE,
        "volume_id": "0badc0de-0000-4000-8000-000000000001",
        "startup_command": "sleep 100",
        "power": "stopped",
    }


def test_tokens_are_single_use_and_expire(nodes: Nodes) -> None:
    internal_id = f"{nodes.src.prefix}-raw"
    manifest = {
        **PROTOCOL,
        "transfer_id": "abc1230000000000",
        "document": document(nodes, internal_id),
    }
    body = frame(b"M", orjson.dumps(manifest)) + frame(b"D", b"x") + frame(b"E", b"{}")
    token = token_for(nodes, internal_id)
    first = raw_send(nodes, internal_id, token, body)
    assert first.status_code == 400, first.text  # consumed, then refused on the checksum
    again = raw_send(nodes, internal_id, token, body)
    assert again.status_code == 401
    assert again.json() == {"error": "Transfer refused: unknown or already used transfer token"}
    other = raw_send(nodes, f"{internal_id}-other", token_for(nodes, internal_id), body)
    assert other.status_code == 401
    assert "another container" in other.json()["error"]
    short = token_for(nodes, internal_id, ttl="1s")
    time.sleep(1.2)
    expired = raw_send(nodes, internal_id, short, body)
    assert expired.status_code == 401
    assert expired.json() == {"error": "Transfer refused: transfer token expired"}
    missing = raw_send(nodes, internal_id, "", body)
    assert missing.status_code == 401


def test_a_corrupted_stream_is_refused_and_leaves_nothing(nodes: Nodes) -> None:
    internal_id = f"{nodes.src.prefix}-bad"
    doc = document(nodes, internal_id)
    manifest = {**PROTOCOL, "transfer_id": "def4560000000000", "document": doc}
    data = os.urandom(100_000)
    end = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    corrupted = bytes([data[0] ^ 0xFF]) + data[1:]
    body = (
        frame(b"M", orjson.dumps(manifest))
        + frame(b"D", corrupted)
        + frame(b"E", orjson.dumps(end))
    )
    answer = raw_send(nodes, internal_id, token_for(nodes, internal_id), body)
    assert answer.status_code == 400
    assert answer.json() == {"error": "Transfer refused: checksum mismatch"}
    assert nodes.dst_api.get(f"/containers/{internal_id}").status_code == 404
    assert not (nodes.target.data_dir / "volumes" / doc["volume_id"]).exists()
    staging = nodes.target.data_dir / "transfer-staging"
    assert not staging.exists() or not any(staging.iterdir())
    cut = raw_send(nodes, internal_id, token_for(nodes, internal_id), body[: len(body) // 2])
    assert cut.status_code == 500 or cut.status_code == 400
    assert not staging.exists() or not any(staging.iterdir())


@pytest.mark.parametrize(
    ("victim", "phase", "live"),
    [
        ("source", "sending", False),
        ("target", "sending", False),
        ("source", "first pass", True),
        ("target", "converging", False),
    ],
)
def test_kill_9_leaves_the_source_authoritative(
    nodes: Nodes, victim: str, phase: str, live: bool
) -> None:
    """Either daemon killed at a phase: after the next start the source runs the server,
    the transfer reads ``failed`` (``Interrupted`` on the killed node) on both nodes, and
    the target holds nothing (what it had published is removed at its start)."""
    internal_id, volume_id, volume, port = running_container(nodes)
    for index in range(6 if phase != "converging" else 1):
        (volume / f"big-{index}.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    before = tree(volume)
    assert nodes.dst_api.post("/network/ports", json=port).status_code == 200
    nodes.dst.ports.append(port["port"])
    transfer_id = start_transfer(nodes, internal_id, live=live)
    on = "target" if phase == "converging" else "source"
    wait_phase(nodes, transfer_id, {phase}, on=on)
    killed = nodes.source if victim == "source" else nodes.target
    # The killed node's record of the transfer is on disk (a target killed before it
    # wrote one knows nothing of the transfer: nothing to end, nothing kept).
    record_file = killed.data_dir / "state" / "transfers" / f"{transfer_id}.json"
    wait_for(record_file.exists, timeout=30, what="the killed node's transfer record")
    assert killed.proc is not None
    killed.proc.kill()
    killed.proc.wait(timeout=10)
    killed.start()
    nodes.reconnect(victim)
    killed_api = nodes.src_api if victim == "source" else nodes.dst_api
    record = wait_ended(killed_api, transfer_id)
    assert record["state"] == "failed" and record["error"] == "Interrupted", record
    assert wait_ended(nodes.src_api, transfer_id)["state"] == "failed"
    nodes.src.wait_state(internal_id, "running", timeout=60)
    assert nodes.src.get(internal_id)["power"] == "running"
    assert tree(volume) == before
    target_clean(nodes, internal_id, volume_id)


def test_a_live_transfer_sends_the_changes_after_the_stop(nodes: Nodes) -> None:
    """The server writes all along and, when stopped, deletes a file and writes a last
    line: the target's copy holds both, which only the final pass (after the graceful
    stop) can have sent."""
    port = nodes.src.pool_port()
    volume_id = nodes.src.volume()
    volume = Path(nodes.src.volume_path(volume_id))
    fill(volume)
    (volume / "old.txt").write_bytes(b"removed before the stop")
    internal_id = nodes.src.create(
        "live",
        volume_id=volume_id,
        ports=[port],
        startup_command=(
            "trap 'rm -f old.txt; echo stopped >> ticks.log; exit 0' TERM; "
            "echo 'Done (0.1s)! For help'; i=0; while true; do i=$((i+1)); "
            "echo $i >> ticks.log; sleep 0.05; done"
        ),
    )
    nodes.src.wait_state(internal_id, "running")
    assert nodes.dst_api.post("/network/ports", json=port).status_code == 200
    nodes.dst.ports.append(port["port"])
    with (
        Watcher(nodes.source, f"/watch?token={nodes.source.token}") as src_watch,
        Watcher(nodes.target, f"/watch?token={nodes.target.token}") as dst_watch,
    ):
        outcome = transfer(
            nodes, internal_id, token_for(nodes, internal_id), live=True, keep_source=True
        )
        assert outcome["state"] == "completed", outcome
        for watch, role in ((src_watch, "source"), (dst_watch, "target")):
            phases: list[str] = []

            def ended(event: dict[str, Any], phases: list[str] = phases) -> bool:
                if event.get("kind") != "transfer":
                    return False
                phases.append(event["object"]["phase"])
                return bool(event["object"]["state"] == "completed")

            last = watch.until(ended, timeout=30)
            assert last["id"] == outcome["transfer_id"]
            assert last["object"]["role"] == role
            expected = "first pass" if role == "source" else "staged"
            assert expected in phases, phases
    on_target = nodes.dst_api.get(f"/transfers/{outcome['transfer_id']}").json()
    assert on_target["role"] == "target" and on_target["state"] == "completed"
    assert nodes.dst.get(internal_id)["state"] == "running"
    final = (volume / "ticks.log").read_text()  # kept: keep_source
    assert final.endswith("stopped\n")
    copied = (Path(nodes.dst.volume_path(volume_id)) / "ticks.log").read_text()
    assert copied.startswith(final)  # then the target's own run appends
    assert not (Path(nodes.dst.volume_path(volume_id)) / "old.txt").exists()
    assert nodes.src_api.get(f"/containers/{internal_id}").status_code == 404
