"""Two real lightd daemons for transfer tests, and what the tests do with them.

:class:`Nodes` holds a source and a target daemon (own data folders and node ids, one
engine) and clients for both; the helpers fill a volume, snapshot a tree (content,
mode, mtime, links), mint tokens and run a transfer to its end.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab

# What a hand-made manifest carries for the commit step (protocol 2).
COMMIT_SECRET = "test-commit-secret"
PROTOCOL = {"version": 2, "commit_sha256": hashlib.sha256(COMMIT_SECRET.encode()).hexdigest()}


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


def backup(
    api: httpx.Client, volume_id: str, name: str, adapter: str = "archive"
) -> dict[str, Any]:
    """A manual backup of ``volume_id`` through the API, waited for until ``done``."""
    answer = api.post(f"/volumes/{volume_id}/backups", json={"adapter": adapter, "name": name})
    assert answer.status_code == 202, answer.text
    backup_id = answer.json()["backup_id"]

    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/volumes/{volume_id}/backups/{backup_id}").json()
        return body if body["state"] != "running" else None

    record: dict[str, Any] = wait_for(ended, timeout=60, what=f"{adapter} backup {name}")
    assert record["state"] == "done", record
    return record


def wait_restored(api: httpx.Client, volume_id: str, backup_id: str) -> dict[str, Any]:
    """The backup's record once its restore is no longer ``running``."""

    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/volumes/{volume_id}/backups/{backup_id}").json()
        return body if body["restore"]["state"] != "running" else None

    found: dict[str, Any] = wait_for(ended, timeout=90, what="the restore")
    return found


def move_with_backups(
    nodes: Nodes,
    internal_id: str,
    volume_id: str,
    port: dict[str, Any],
    originals: list[dict[str, Any]],
) -> None:
    """Move the container with ``include_backups`` and check what the target lists.

    The port is added to the target's pool first; after the transfer the target's
    volume is the source's tree and it lists exactly ``originals`` with the same ids,
    names, adapters, states, sizes, checksums, file counts and creation times.
    """
    before = tree(Path(nodes.src.volume_path(volume_id)))
    assert nodes.dst_api.post("/network/ports", json=port).status_code == 200
    nodes.dst.ports.append(port["port"])
    outcome = transfer(nodes, internal_id, token_for(nodes, internal_id), include_backups=True)
    assert outcome["state"] == "completed", outcome
    assert tree(Path(nodes.dst.volume_path(volume_id))) == before
    listed = nodes.dst_api.get(f"/volumes/{volume_id}/backups")
    assert listed.status_code == 200, listed.text
    moved = {b["backup_id"]: b for b in listed.json()["backups"]}
    assert set(moved) == {original["backup_id"] for original in originals}
    for original in originals:
        copy = moved[original["backup_id"]]
        for key in ("name", "adapter", "state", "size", "checksum", "files", "created_at"):
            assert copy[key] == original[key], key


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


def start_transfer(
    nodes: Nodes, internal_id: str, *, live: bool = False, target_url: str | None = None
) -> str:
    started = nodes.src_api.post(
        f"/containers/{internal_id}/transfer",
        json={
            "target_url": target_url or nodes.target.base_url,
            "token": token_for(nodes, internal_id),
            "live": live,
        },
    )
    assert started.status_code == 202, started.text
    return str(started.json()["transfer_id"])


def wait_phase(
    nodes: Nodes, transfer_id: str, phases: set[str], *, on: str = "source"
) -> dict[str, Any]:
    """Until the transfer is in one of ``phases`` on that node (with bytes moved, unless
    the phase is ``converging``), polled every 20 ms."""
    api = nodes.src_api if on == "source" else nodes.dst_api

    def seen() -> dict[str, Any] | None:
        answer = api.get(f"/transfers/{transfer_id}")
        if answer.status_code == 404:
            return None
        body: dict[str, Any] = answer.json()
        assert body["state"] == "running", body
        moved = body["bytes_done"] > 0 or body["phase"] == "converging"
        return body if body["phase"] in phases and moved else None

    found: dict[str, Any] = wait_for(seen, timeout=90, interval=0.02, what=f"phase {phases}")
    return found


def wait_ended(api: httpx.Client, transfer_id: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        answer = api.get(f"/transfers/{transfer_id}")
        if answer.status_code != 200:
            return None
        body: dict[str, Any] = answer.json()
        return body if body["state"] != "running" else None

    found: dict[str, Any] = wait_for(ended, timeout=timeout, interval=0.1, what="the end")
    return found


def staging_empty(nodes: Nodes) -> bool:
    staging = nodes.target.data_dir / "transfer-staging"
    return not staging.exists() or not any(staging.iterdir())


def target_clean(nodes: Nodes, internal_id: str, volume_id: str) -> None:
    """The target holds nothing of the container: document, volume, staging."""
    wait_for(lambda: staging_empty(nodes), timeout=30, what="the target's staging removed")
    wait_for(
        lambda: not (nodes.target.data_dir / "volumes" / volume_id).exists(),
        timeout=60,
        what="the target's copy of the volume removed",
    )
    assert nodes.dst_api.get(f"/containers/{internal_id}").status_code == 404


def engine_holders(nodes: Nodes, internal_id: str, *, running: bool) -> set[str]:
    """Which nodes (``source``, ``target``) hold an engine container of ``internal_id``
    (any, or only running ones), told apart by its ``io.lightd.node`` label."""
    names = {
        (nodes.source.data_dir / "node.id").read_text().strip(): "source",
        (nodes.target.data_dir / "node.id").read_text().strip(): "target",
    }
    with engine.client() as docker_client:
        found = docker_client.api.containers(
            all=not running, filters={"label": [f"io.lightd.internal_id={internal_id}"]}
        )
    return {names.get(str(c["Labels"].get("io.lightd.node")), "other") for c in found}


def only_one_runs(nodes: Nodes, internal_id: str, volume_id: str, owner: str) -> None:
    """``owner`` runs the server, the other node holds nothing of it: no document, no
    engine container, no volume (nor staging on the target)."""
    owner_lab = nodes.src if owner == "source" else nodes.dst
    owner_lab.wait_state(internal_id, "running", timeout=60)
    assert owner_lab.get(internal_id)["power"] == "running"
    other = "target" if owner == "source" else "source"
    if other == "target":
        target_clean(nodes, internal_id, volume_id)
    else:
        assert nodes.src_api.get(f"/containers/{internal_id}").status_code == 404
        wait_for(
            lambda: not (nodes.source.data_dir / "volumes" / volume_id).exists(),
            timeout=60,
            what="the source volume removed",
        )
    wait_for(
        lambda: engine_holders(nodes, internal_id, running=False) == {owner},
        timeout=60,
        what=f"only the {owner}'s engine container left",
    )
    assert engine_holders(nodes, internal_id, running=True) == {owner}


def wait_log(daemon: DaemonProcess, text: str, timeout: float = 90) -> None:
    wait_for(lambda: text in daemon.new_log(), timeout=timeout, interval=0.1, what=repr(text))


def kill_and_start(nodes: Nodes, which: str, *, drop_env: tuple[str, ...] = ()) -> None:
    """``kill -9`` one daemon, then start it again (without the ``drop_env`` variables)."""
    daemon = nodes.source if which == "source" else nodes.target
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait(timeout=10)
    for name in drop_env:
        daemon.extra_env.pop(name, None)
    daemon.start()
    nodes.reconnect(which)
