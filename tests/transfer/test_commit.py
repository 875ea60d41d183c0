"""The commit step: in every interleaving exactly one node ends up owning the server.

Two real daemons; the source is killed with ``kill -9`` at the points of the commit step
(held there by the ``LIGHTD_TRANSFER_TEST_PAUSE`` hook, since these are races no timing
hits reliably), or a proxy the test controls loses an answer the target sent. Each test
then checks that one node runs the server and the other has no document, engine
container or volume left (:func:`tests.transfer.helpers.only_one_runs`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lightd.transfer.hooks import ENV as PAUSE
from tests.support import engine
from tests.support.daemon import wait_for
from tests.transfer.helpers import (
    Nodes,
    engine_holders,
    kill_and_start,
    only_one_runs,
    running_container,
    start_transfer,
    target_clean,
    tree,
    wait_ended,
    wait_log,
)
from tests.transfer.proxy import Proxy

COMMIT_WINDOW = "LIGHTD_TRANSFERS__COMMIT_TIMEOUT_SECONDS"


def prepared(nodes: Nodes) -> tuple[str, str, dict[str, tuple[object, ...]]]:
    """A running container with a filled volume, its port in the target's pool."""
    internal_id, volume_id, volume, port = running_container(nodes)
    (volume / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    assert nodes.dst_api.post("/network/ports", json=port).status_code == 200
    nodes.dst.ports.append(port["port"])
    return internal_id, volume_id, tree(volume)


def paused(nodes: Nodes, transfer_id: str, point: str) -> None:
    wait_log(nodes.source, f"transfer {transfer_id}: paused at {point} (test hook)")


def engine_copy(nodes: Nodes, internal_id: str) -> str:
    """The id of the target's engine container of ``internal_id`` (by its node label)."""
    node = (nodes.target.data_dir / "node.id").read_text().strip()
    with engine.client() as docker_client:
        found = docker_client.api.containers(
            all=True,
            filters={"label": [f"io.lightd.internal_id={internal_id}", f"io.lightd.node={node}"]},
        )
    assert len(found) == 1, found
    return str(found[0]["Id"])


def engine_actions(container_id: str, since: float) -> list[str]:
    """What the engine did to one container since ``since`` (its events, in order)."""
    with engine.client() as docker_client:
        events = docker_client.api.events(
            since=since,
            until=time.time() + 1,
            filters={"container": container_id},
            decode=True,
        )
        return [str(event.get("Action") or event.get("status")) for event in events]


@pytest.mark.parametrize("node_env", [{"source": {PAUSE: "ready"}}])
def test_source_killed_after_ready_the_target_drops_its_copy(nodes: Nodes) -> None:
    """Killed after the target answered ready, before ``committing`` was recorded: the
    commit was never sent, so at its start the source aborts the target (which removes
    its running copy) and starts its own server again."""
    internal_id, volume_id, before = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    paused(nodes, transfer_id, "ready")
    on_target = nodes.dst_api.get(f"/transfers/{transfer_id}").json()
    assert on_target["state"] == "running" and on_target["phase"] == "awaiting commit"
    assert nodes.dst.get(internal_id)["state"] == "running"  # the copy runs, uncommitted
    assert engine_holders(nodes, internal_id, running=True) == {"target"}
    kill_and_start(nodes, "source", drop_env=(PAUSE,))
    record = wait_ended(nodes.src_api, transfer_id)
    assert record["state"] == "failed" and record["error"] == "Interrupted", record
    aborted = wait_ended(nodes.dst_api, transfer_id)
    assert aborted["state"] == "failed", aborted
    assert aborted["error"] == "Transfer aborted by the source", aborted
    only_one_runs(nodes, internal_id, volume_id, "source")
    assert tree(Path(nodes.src.volume_path(volume_id))) == before


@pytest.mark.parametrize("node_env", [{"source": {PAUSE: "committing"}}])
def test_source_killed_in_committing_commits_at_its_start(nodes: Nodes) -> None:
    """Killed after recording ``committing`` (the commit not sent yet): at its start the
    source keeps its server stopped and sends the commit, which the target, still in
    its window, takes; then the source cleans up."""
    internal_id, volume_id, before = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    paused(nodes, transfer_id, "committing")
    assert nodes.src_api.get(f"/transfers/{transfer_id}").json()["phase"] == "committing"
    kill_and_start(nodes, "source", drop_env=(PAUSE,))
    record = wait_ended(nodes.src_api, transfer_id)
    assert record["state"] == "completed" and record["error"] is None, record
    assert wait_ended(nodes.dst_api, transfer_id)["state"] == "completed"
    only_one_runs(nodes, internal_id, volume_id, "target")
    assert tree(Path(nodes.dst.volume_path(volume_id))) == before


@pytest.mark.parametrize("node_env", [{"source": {PAUSE: "committed"}}])
def test_source_killed_after_the_commit_finishes_cleaning(nodes: Nodes) -> None:
    """Killed after the target acknowledged the commit, before ``cleaning`` was
    recorded: at its start the source asks again (the commit is idempotent), hears
    ``committed`` and deletes its container, document and volume, never starting it."""
    internal_id, volume_id, before = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    paused(nodes, transfer_id, "committed")
    assert wait_ended(nodes.dst_api, transfer_id)["state"] == "completed"
    assert nodes.src_api.get(f"/transfers/{transfer_id}").json()["phase"] == "committing"
    kill_and_start(nodes, "source", drop_env=(PAUSE,))
    record = wait_ended(nodes.src_api, transfer_id)
    assert record["state"] == "completed", record
    only_one_runs(nodes, internal_id, volume_id, "target")
    assert tree(Path(nodes.dst.volume_path(volume_id))) == before


@pytest.mark.parametrize("node_env", [{"target": {PAUSE: "seeded"}}])
def test_target_killed_between_the_seed_and_the_document_keeps_nothing(nodes: Nodes) -> None:
    """The target is killed after it seeded the install record and before it wrote the
    document (a new node: its desired folder was never made). At its start the record
    alone goes, at once: no deletion held for it, no record left, and the source runs
    its server again."""
    internal_id, volume_id, before = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    wait_log(nodes.target, f"transfer {transfer_id}: paused at seeded (test hook)")
    record_file = nodes.target.data_dir / "state" / "containers" / f"{internal_id}.json"
    assert record_file.exists()  # the seeded record, on disk before the document
    kill_and_start(nodes, "target", drop_env=(PAUSE,))
    record = wait_ended(nodes.dst_api, transfer_id)
    assert record["state"] == "failed" and record["error"] == "Interrupted", record
    desired = nodes.dst_api.get("/desired").json()
    assert desired["deletion_blocked"] is None, desired
    assert internal_id not in desired["held"], desired
    assert not record_file.exists()
    target_clean(nodes, internal_id, volume_id)
    assert wait_ended(nodes.src_api, transfer_id)["state"] == "failed"
    nodes.src.wait_state(internal_id, "running", timeout=60)
    assert tree(Path(nodes.src.volume_path(volume_id))) == before


@pytest.mark.parametrize("node_env", [{"source": {PAUSE: "ready"}}])
def test_target_killed_awaiting_the_commit_never_starts_its_copy_again(nodes: Nodes) -> None:
    """The target is killed (``kill -9``) while its copy awaits the commit, and the copy
    stops while the daemon is down (as at a host's reboot: lightd's containers have no
    restart policy). At its start (a slow one) the target ends the transfer
    ``Interrupted`` and drops the copy's document before its reconciler converges
    anything, so the copy is removed without ever being started again (the engine's
    events of it: no ``start``, a ``destroy``). The source, started again without its
    pause, never sent the commit: it aborts (the target answers ``failed``) and runs its
    own server again."""
    internal_id, volume_id, before = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    paused(nodes, transfer_id, "ready")
    on_target = nodes.dst_api.get(f"/transfers/{transfer_id}").json()
    assert on_target["state"] == "running" and on_target["phase"] == "awaiting commit"
    copy = engine_copy(nodes, internal_id)
    assert nodes.target.proc is not None
    nodes.target.proc.kill()
    nodes.target.proc.wait(timeout=10)
    with engine.client() as docker_client:
        docker_client.api.kill(copy)
        docker_client.api.wait(copy, timeout=30)
    # A slow start (restic's version check, run by the backup service, takes 6 s here):
    # a reconciler started before the transfers' recovery has ample time to start it.
    slow = nodes.target.data_dir.parent / "slow-restic"
    slow.write_text('#!/bin/sh\nsleep 6\nexec restic "$@"\n')
    slow.chmod(0o755)
    nodes.target.extra_env["LIGHTD_BACKUPS__RESTIC__BINARY"] = str(slow)
    since = time.time()
    nodes.target.start()
    nodes.reconnect("target")
    record = wait_ended(nodes.dst_api, transfer_id)
    assert record["state"] == "failed" and record["error"] == "Interrupted", record
    target_clean(nodes, internal_id, volume_id)
    wait_for(
        lambda: engine_holders(nodes, internal_id, running=False) == {"source"},
        timeout=60,
        what="the target's copy removed from the engine",
    )
    actions = engine_actions(copy, since)
    assert "destroy" in actions, actions
    assert "start" not in actions, f"the uncommitted copy was started again: {actions}"
    kill_and_start(nodes, "source", drop_env=(PAUSE,))
    aborted = wait_ended(nodes.src_api, transfer_id)
    assert aborted["state"] == "failed" and aborted["error"] == "Interrupted", aborted
    only_one_runs(nodes, internal_id, volume_id, "source")
    assert tree(Path(nodes.src.volume_path(volume_id))) == before


def test_a_lost_commit_answer_is_settled_by_asking_again(nodes: Nodes) -> None:
    """The commit reaches the target, its answer is lost (the proxy resets the
    connection): the source sends it again, hears ``completed`` and cleans up."""
    internal_id, volume_id, before = prepared(nodes)
    with Proxy(nodes.target.port) as proxy:
        proxy.lose_answer(b"x-lightd-transfer-pass: commit")
        transfer_id = start_transfer(
            nodes, internal_id, target_url=f"http://127.0.0.1:{proxy.port}"
        )
        record = wait_ended(nodes.src_api, transfer_id, timeout=90)
        assert proxy.lost == 1
    assert record["state"] == "completed", record
    assert wait_ended(nodes.dst_api, transfer_id)["state"] == "completed"
    only_one_runs(nodes, internal_id, volume_id, "target")
    assert tree(Path(nodes.dst.volume_path(volume_id))) == before


def test_a_lost_ready_answer_aborts_the_target(nodes: Nodes) -> None:
    """The target published, started its copy and answered ready; the answer is lost:
    the source, which never sent a commit, aborts the target (its copy is removed)
    and runs its server again."""
    internal_id, volume_id, before = prepared(nodes)
    with Proxy(nodes.target.port) as proxy:
        proxy.lose_answer(b"x-lightd-transfer-pass: only")
        transfer_id = start_transfer(
            nodes, internal_id, target_url=f"http://127.0.0.1:{proxy.port}"
        )
        record = wait_ended(nodes.src_api, transfer_id, timeout=90)
        assert proxy.lost == 1
    assert record["state"] == "failed", record
    assert record["error"].startswith("Transfer failed: "), record
    on_target = wait_ended(nodes.dst_api, transfer_id)
    assert on_target["state"] == "failed", on_target
    assert on_target["error"] == "Transfer aborted by the source", on_target
    only_one_runs(nodes, internal_id, volume_id, "source")
    assert tree(Path(nodes.src.volume_path(volume_id))) == before


@pytest.mark.parametrize("node_env", [{"source": {PAUSE: "ready"}, "target": {COMMIT_WINDOW: "3"}}])
def test_no_commit_in_its_window_the_target_removes_its_copy(nodes: Nodes) -> None:
    """The source goes silent after the ready answer: the target removes its copy when
    its commit window closes, on its own; the source, killed and started again, hears
    ``failed`` and runs its server again."""
    internal_id, volume_id, before = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    paused(nodes, transfer_id, "ready")
    expired = wait_ended(nodes.dst_api, transfer_id, timeout=30)
    assert expired["state"] == "failed", expired
    assert expired["error"] == "Transfer failed: no commit from the source in time", expired
    target_clean(nodes, internal_id, volume_id)
    kill_and_start(nodes, "source", drop_env=(PAUSE,))
    assert wait_ended(nodes.src_api, transfer_id)["state"] == "failed"
    only_one_runs(nodes, internal_id, volume_id, "source")
    assert tree(Path(nodes.src.volume_path(volume_id))) == before


@pytest.mark.parametrize(
    "node_env", [{"source": {PAUSE: "committing"}, "target": {COMMIT_WINDOW: "2"}}]
)
def test_a_target_unreachable_in_committing_leaves_the_source_stopped(nodes: Nodes) -> None:
    """In ``committing`` the commit may have reached the target, so a source that cannot
    reach it for twice its window plus 10 s does not start its server (which could run
    it twice): the transfer fails with an error asking an operator to check the target.
    Here the target never got the commit and removed its copy, so nobody runs it."""
    internal_id, volume_id, before = prepared(nodes)
    with Proxy(nodes.target.port) as proxy:
        transfer_id = start_transfer(
            nodes, internal_id, target_url=f"http://127.0.0.1:{proxy.port}"
        )
        paused(nodes, transfer_id, "committing")
    kill_and_start(nodes, "source", drop_env=(PAUSE,))
    record = wait_ended(nodes.src_api, transfer_id, timeout=60)
    assert record["state"] == "failed", record
    assert "could not be reached to settle the commit" in record["error"], record
    assert "An operator must check the target" in record["error"], record
    kept = nodes.src.get(internal_id)
    assert kept["power"] == "stopped" and kept["state"] == "offline", kept
    expired = wait_ended(nodes.dst_api, transfer_id)
    assert expired["error"] == "Transfer failed: no commit from the source in time", expired
    target_clean(nodes, internal_id, volume_id)
    assert engine_holders(nodes, internal_id, running=True) == set()
    assert tree(Path(nodes.src.volume_path(volume_id))) == before


@pytest.mark.parametrize("node_env", [{"source": {PAUSE: "trashed"}}])
def test_source_killed_while_deleting_its_old_volume_sweeps_it_at_its_start(
    nodes: Nodes,
) -> None:
    """After the commit the source renames its old volume into the trash (out of every
    listing and of the disk accounting at once) and ends the transfer; the tree goes
    in the background. Killed before that delete, the source lists no such volume and
    its next start removes the rest."""
    internal_id, volume_id, before = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    paused(nodes, transfer_id, "trashed")
    record = wait_ended(nodes.src_api, transfer_id)
    assert record["state"] == "completed", record
    trash = nodes.source.data_dir / "volumes" / ".lightd-trash"
    left = list(trash.iterdir())
    assert [entry.name.split(".")[0] for entry in left] == [volume_id]
    assert (left[0] / "big.bin").stat().st_size == 8 * 1024 * 1024  # not deleted yet
    listed = nodes.src_api.get("/volumes").json()["volumes"]
    assert volume_id not in [volume["volume_id"] for volume in listed]
    assert nodes.src_api.get(f"/volumes/{volume_id}").status_code == 404
    assert not (nodes.source.data_dir / "volumes" / volume_id).exists()
    kill_and_start(nodes, "source", drop_env=(PAUSE,))
    wait_for(lambda: not any(trash.iterdir()), timeout=30, what="the trash swept")
    assert volume_id not in [
        v["volume_id"] for v in nodes.src_api.get("/volumes").json()["volumes"]
    ]
    only_one_runs(nodes, internal_id, volume_id, "target")
    assert tree(Path(nodes.dst.volume_path(volume_id))) == before


def test_the_old_volume_leaves_no_trash_behind(nodes: Nodes) -> None:
    """Without a pause the background delete empties the trash soon after the end."""
    internal_id, volume_id, _ = prepared(nodes)
    transfer_id = start_transfer(nodes, internal_id)
    assert wait_ended(nodes.src_api, transfer_id)["state"] == "completed"
    trash = nodes.source.data_dir / "volumes" / ".lightd-trash"
    wait_for(lambda: not any(trash.iterdir()), timeout=30, what="the trash emptied")
    only_one_runs(nodes, internal_id, volume_id, "target")
