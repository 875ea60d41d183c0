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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lightd.transfer.stream import frame
from tests.conftest import FAST_RECONCILER
from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab, new_prefix
from tests.support.ws import Watcher


@dataclass
class Nodes:
    source: DaemonProcess
    target: DaemonProcess
    src: Lab
    dst: Lab
    src_api: httpx.Client
    dst_api: httpx.Client

    def reconnect(self, which: str) -> None:
        """New clients for a restarted daemon (it listens on a new port)."""
        if which == "source":
            self.src_api.close()
            self.src_api = self.src.api = self.source.client()
        else:
            self.dst_api.close()
            self.dst_api = self.dst.api = self.target.client()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    source = DaemonProcess(
        tmp_path / "source", env=dict(FAST_RECONCILER), token="lightd_" + "a1" * 16
    )
    target = DaemonProcess(
        tmp_path / "target", env=dict(FAST_RECONCILER), token="lightd_" + "b2" * 16
    )
    source.start()
    try:
        target.start()
        prefix = new_prefix()
        with source.client() as src_api, target.client() as dst_api:
            pair = Nodes(
                source,
                target,
                Lab(source, src_api, prefix),
                Lab(target, dst_api, prefix),
                src_api,
                dst_api,
            )
            try:
                yield pair
            finally:
                pair.src.cleanup()
                for item in pair.dst_api.get("/containers").json()["containers"]:
                    pair.dst_api.delete(f"/containers/{item['internal_id']}")
                pair.dst.cleanup()
                engine.remove_prefixed(prefix)
                pair.src_api.close()
                pair.dst_api.close()
    finally:
        target.stop(kill=True)
        source.stop(kill=True)


def fill(volume: Path) -> None:
    (volume / "world" / "region").mkdir(parents=True)
    (volume / "server.properties").write_bytes(b"motd=moved\n")
    os.chmod(volume / "server.properties", 0o640)
    (volume / "world" / "region" / "r.0.0.mca").write_bytes(os.urandom(3 * 1024 * 1024))
    os.chmod(volume / "world" / "region" / "r.0.0.mca", 0o600)
    os.utime(volume / "world" / "region" / "r.0.0.mca", (1_600_000_000.5, 1_600_000_000.5))
    for index in range(200):
        (volume / "world" / f"small-{index:03}.dat").write_bytes(os.urandom(index))
    os.symlink("region/r.0.0.mca", volume / "world" / "latest")
    os.symlink("/etc/hostname", volume / "abs-link")
    os.chmod(volume / "world", 0o750)
    os.utime(volume / "world", (1_500_000_000.0, 1_500_000_000.0))


def tree(volume: Path) -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(volume):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            rel = str(path.relative_to(volume))
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path), info.st_mtime)
            elif path.is_dir():
                found[rel] = ("dir", oct(info.st_mode), info.st_mtime)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", oct(info.st_mode), info.st_mtime, digest)
    return found


def running_container(nodes: Nodes) -> tuple[str, str, Path, dict[str, Any]]:
    port = nodes.src.pool_port()
    volume_id = nodes.src.volume()
    volume = Path(nodes.src.volume_path(volume_id))
    fill(volume)
    internal_id = nodes.src.create(
        "mc",
        volume_id=volume_id,
        ports=[port],
        install_script="echo installed >> /mnt/server/install.log",
    )
    nodes.src.wait_state(internal_id, "running")
    assert (volume / "install.log").read_text() == "installed\n"
    return internal_id, volume_id, volume, port


def token_for(nodes: Nodes, internal_id: str, ttl: str = "15m") -> str:
    answer = nodes.dst_api.post("/transfers/tokens", json={"internal_id": internal_id, "ttl": ttl})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def transfer(nodes: Nodes, internal_id: str, token: str, **extra: bool) -> dict[str, Any]:
    started = nodes.src_api.post(
        f"/containers/{internal_id}/transfer",
        json={"target_url": nodes.target.base_url, "token": token, "live": False, **extra},
    )
    assert started.status_code == 202, started.text
    transfer_id = started.json()["transfer_id"]

    def done() -> dict[str, Any] | None:
        seen = nodes.src_api.get(f"/transfers/{transfer_id}").json()
        return seen if seen["state"] != "running" else None

    return dict(wait_for(done, timeout=90, interval=0.2, what="the transfer to end"))


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
        "version": 1,
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
    manifest = {"version": 1, "transfer_id": "def4560000000000", "document": doc}
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


def start_transfer(nodes: Nodes, internal_id: str) -> str:
    started = nodes.src_api.post(
        f"/containers/{internal_id}/transfer",
        json={
            "target_url": nodes.target.base_url,
            "token": token_for(nodes, internal_id),
            "live": False,
        },
    )
    assert started.status_code == 202, started.text
    return str(started.json()["transfer_id"])


def wait_phase(nodes: Nodes, transfer_id: str, phases: set[str]) -> None:
    def seen() -> bool:
        answer = nodes.src_api.get(f"/transfers/{transfer_id}").json()
        assert answer["state"] == "running", answer
        return answer["phase"] in phases and answer["bytes_done"] > 0

    wait_for(seen, timeout=60, interval=0.02, what=f"phase {phases}")


@pytest.mark.parametrize("victim", ["source", "target"])
def test_kill_9_mid_stream_leaves_the_source_authoritative(nodes: Nodes, victim: str) -> None:
    internal_id, volume_id, volume, port = running_container(nodes)
    for index in range(6):
        (volume / f"big-{index}.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    before = tree(volume)
    assert nodes.dst_api.post("/network/ports", json=port).status_code == 200
    nodes.dst.ports.append(port["port"])
    transfer_id = start_transfer(nodes, internal_id)
    wait_phase(nodes, transfer_id, {"sending"})
    killed = nodes.source if victim == "source" else nodes.target
    assert killed.proc is not None
    killed.proc.kill()
    killed.proc.wait(timeout=10)
    killed.start()
    nodes.reconnect(victim)
    if victim == "target":
        outcome = nodes.src_api.get(f"/transfers/{transfer_id}").json()
        deadline = time.monotonic() + 30
        while outcome["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            outcome = nodes.src_api.get(f"/transfers/{transfer_id}").json()
        assert outcome["state"] == "failed", outcome
    nodes.src.wait_state(internal_id, "running", timeout=60)
    assert nodes.src.get(internal_id)["power"] == "running"
    assert tree(volume) == before
    assert nodes.dst_api.get(f"/containers/{internal_id}").status_code == 404
    assert not (nodes.target.data_dir / "volumes" / volume_id).exists()
    staging = nodes.target.data_dir / "transfer-staging"
    wait_for(
        lambda: not staging.exists() or not any(staging.iterdir()),
        timeout=30,
        what="the target's staging removed",
    )


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
