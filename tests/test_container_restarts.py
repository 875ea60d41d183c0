"""Restart safety: lightd killed or restarted at any moment converges without duplicates."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab, new_prefix


@pytest.fixture
def own_lab(fresh_daemon: DaemonProcess) -> Iterator[Lab]:
    fresh_daemon.start()
    client = fresh_daemon.client()
    corner = Lab(fresh_daemon, client, new_prefix())
    try:
        yield corner
    finally:
        if fresh_daemon.proc is None:
            fresh_daemon.start()
            reconnect(corner)
        corner.cleanup()
        corner.api.close()


def reconnect(lab: Lab) -> None:
    lab.api.close()
    lab.api = lab.daemon.client()


def test_restart_leaves_running_containers_alone(own_lab: Lab) -> None:
    cid = own_lab.create("keep")
    first = own_lab.wait_state(cid, "running")
    before = engine.inspect(f"lightd-{cid}")
    assert before is not None
    own_lab.daemon.restart()
    reconnect(own_lab)
    time.sleep(3)  # the first resync and event stream are done by now
    after = engine.inspect(f"lightd-{cid}")
    assert after is not None
    assert after["Id"] == before["Id"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    state = own_lab.get(cid)
    assert state["state"] == "running"
    assert state["container_id"] == first["container_id"]


def test_sigkill_during_install_converges_to_one_container(own_lab: Lab) -> None:
    cid = own_lab.create("killinst", install_script="echo start; sleep 2; echo end")
    own_lab.wait(cid, lambda c: c["install_state"] == "installing", what="installing")
    wait_for(lambda: engine.managed_names(f"{cid}-install"), what="install container")
    own_lab.daemon.stop(kill=True)
    own_lab.daemon.start()
    reconnect(own_lab)
    own_lab.wait_state(cid, "running", timeout=40)
    assert engine.managed_names(cid) == [f"lightd-{cid}"]
    assert "end" in own_lab.api.get(f"/containers/{cid}/install-log").text


def test_sigkill_during_recreate_converges_to_one_container(own_lab: Lab) -> None:
    cid = own_lab.create(
        "killre",
        startup_command="trap 'sleep 3; exit 0' TERM; echo up; while true; do sleep 1; done",
    )
    first = own_lab.wait_state(cid, "running")
    document = own_lab.daemon.desired_dir / "containers" / f"{cid}.json"
    answer = own_lab.api.post(f"/containers/{cid}/reinstall", json={"image": engine.TEST_IMAGE})
    assert answer.status_code == 200
    # The image is the same but the stop takes 3 s: kill lightd in the middle of it.
    own_lab.wait(cid, lambda c: c["state"] == "stopping", what="stopping", timeout=10)
    own_lab.daemon.stop(kill=True)
    assert document.exists()
    own_lab.daemon.start()
    reconnect(own_lab)
    state = own_lab.wait(
        cid,
        lambda c: c["state"] == "running" and c["revision_applied"] == c["revision_desired"],
        what="converged",
        timeout=40,
    )
    assert engine.managed_names(cid) == [f"lightd-{cid}"]
    assert state["container_id"] == first["container_id"] or state["container_id"]


def test_killed_during_delete_finishes_delete(own_lab: Lab) -> None:
    cid = own_lab.create(
        "killdel", startup_command="trap 'sleep 3; exit 0' TERM; while true; do sleep 1; done"
    )
    own_lab.wait_state(cid, "running")
    own_lab.api.delete(f"/containers/{cid}")
    time.sleep(0.5)
    own_lab.daemon.stop(kill=True)
    own_lab.daemon.start()
    reconnect(own_lab)
    own_lab.wait_gone(cid, timeout=40)
    assert own_lab.api.get(f"/containers/{cid}").status_code == 404


def test_unlabelled_namesake_is_a_conflict_left_alone(own_lab: Lab) -> None:
    cid = f"{own_lab.prefix}-squat"
    with engine.client() as client:
        squatter = client.api.create_container(
            engine.TEST_IMAGE, command=["sleep", "1000"], name=f"lightd-{cid}"
        )
    try:
        own_lab.create("squat")
        state = own_lab.wait(cid, lambda c: c["last_error"] is not None, what="conflict")
        assert state["last_error"].startswith("Conflict")
        assert engine.inspect(f"lightd-{cid}")["Id"] == squatter["Id"]  # type: ignore[index]
    finally:
        own_lab.api.delete(f"/containers/{cid}")
        time.sleep(1)
        assert engine.inspect(f"lightd-{cid}") is not None  # never deleted by lightd
        with engine.client() as client:
            client.api.remove_container(squatter["Id"], force=True)


def test_pool_api_errors_are_json_with_containers(own_lab: Lab) -> None:
    port = own_lab.pool_port()
    cid = own_lab.create("pool", ports=[port], power="stopped")
    answer = own_lab.api.delete(f"/network/ports/127.0.0.1/{port['port']}")
    assert answer.status_code == 409
    assert answer.json() == {"error": f"Port is in use by container {cid}"}
    assert isinstance(own_lab.api, httpx.Client)


def test_another_nodes_container_is_left_alone(own_lab: Lab) -> None:
    """Two lightd processes on one engine never touch each other's containers."""
    name = f"lightd-{own_lab.prefix}-foreign"
    with engine.client() as client:
        foreign = client.api.create_container(
            engine.TEST_IMAGE,
            command=["sleep", "1000"],
            name=name,
            labels={
                "io.lightd.managed": "true",
                "io.lightd.internal_id": f"{own_lab.prefix}-foreign",
                "io.lightd.role": "main",
                "io.lightd.node": "some-other-node",
            },
        )
        client.api.start(foreign["Id"])
    try:
        time.sleep(5)  # two resyncs of this daemon pass
        inspected = engine.inspect(name)
        assert inspected is not None and inspected["State"]["Running"]
    finally:
        with engine.client() as client:
            client.api.remove_container(foreign["Id"], force=True)
