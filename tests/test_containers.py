"""Containers against the real engine: install, run, power, drift repair, rebind, delete."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.support import engine
from tests.support.daemon import wait_for
from tests.support.lab import Lab


def running(lab: Lab, internal_id: str, timeout: float = 30) -> dict[str, object]:
    return lab.wait_state(internal_id, "running", timeout=timeout)


def test_install_then_running_with_start_pattern(lab: Lab) -> None:
    port = lab.pool_port()
    volume = lab.volume()
    cid = lab.create(
        "web",
        volume_id=volume,
        install_script="echo installing now\necho hello > /mnt/server/from-install.txt\n"
        "echo second > /home/container/second.txt",
        startup_command="echo booting; sleep 1; printf '\\033[32mDone (1.0s)! For help\\033[0m\\n';"
        " exec sleep 1000",
        start_pattern=r"Done \(\d+\.\ds\)! For help",
        ports=[port],
    )
    created = lab.get(cid)
    assert created["install_state"] in {"installing", "ready"}
    state = running(lab, cid)
    assert state["install_state"] == "ready"
    assert state["container_id"]
    volume_dir = Path(lab.volume_path(volume))
    assert (volume_dir / "from-install.txt").read_text() == "hello\n"
    assert (volume_dir / "second.txt").read_text() == "second\n"
    log = lab.api.get(f"/containers/{cid}/install-log")
    assert log.status_code == 200
    assert "installing now" in log.text
    inspected = engine.inspect(f"lightd-{cid}")
    assert inspected is not None
    assert inspected["State"]["Running"] is True
    assert not engine.managed_names(f"{cid}-install")
    listed = lab.api.get("/containers").json()["containers"]
    mine = [c for c in listed if c["internal_id"] == cid]
    assert mine and set(mine[0]) >= {"internal_id", "container_id", "install_state", "image"}


def test_without_pattern_is_running_once_up(lab: Lab) -> None:
    cid = lab.create("nopat", startup_command="exec sleep 1000")
    state = running(lab, cid)
    assert state["start_pattern"] is None


def test_pattern_not_seen_stays_starting(lab: Lab) -> None:
    cid = lab.create(
        "slow", startup_command="echo still loading; exec sleep 1000", start_pattern="^Ready$"
    )
    lab.wait(cid, lambda c: c["state"] == "starting" and c["container_id"], what="starting")
    time.sleep(1.5)
    assert lab.get(cid)["state"] == "starting"


def test_power_stopped_installs_but_does_not_start(lab: Lab) -> None:
    cid = lab.create("stopped", power="stopped", install_script="true")
    state = lab.wait(
        cid, lambda c: c["install_state"] == "ready" and c["container_id"], what="created"
    )
    assert state["state"] == "offline"
    time.sleep(1)
    inspected = engine.inspect(f"lightd-{cid}")
    assert inspected is not None and inspected["State"]["Running"] is False


def test_failing_install_ends_failed_with_output(lab: Lab) -> None:
    cid = lab.create("badinst", install_script="echo downloading server\necho boom >&2\nexit 3")
    state = lab.wait(cid, lambda c: c["install_state"] == "failed", what="install failed")
    assert state["install_exit_code"] == 3
    assert "exit code 3" in state["last_error"]
    assert "boom" in lab.api.get(f"/containers/{cid}/install-log").text
    assert engine.inspect(f"lightd-{cid}") is None  # never created
    assert not engine.managed_names(cid)


def test_install_timeout_fails(lab: Lab) -> None:
    cid = lab.create("hang", install_script="echo waiting forever\nsleep 600")
    state = lab.wait(
        cid, lambda c: c["install_state"] == "failed", what="install timeout", timeout=40
    )
    assert "timed out" in state["last_error"]
    assert not engine.managed_names(f"{cid}-install")


def test_missing_image(lab: Lab) -> None:
    cid = lab.create("noimg", image="lightd-test/does-not-exist:1", install_script="true")
    state = lab.wait(cid, lambda c: c["last_error"] is not None, what="error", timeout=60)
    assert state["last_error"] == "Failed to create Docker container: image not found"
    assert state["install_state"] == "failed"


def test_limits_and_conventions_visible_in_inspect(lab: Lab) -> None:
    port = lab.pool_port()
    cid = lab.create(
        "limits",
        ports=[port],
        limits={"memory": 96 * 1024 * 1024, "cpu": 0.25},
        environment={"GREETING": "hi"},
    )
    running(lab, cid)
    inspected = engine.inspect(f"lightd-{cid}")
    assert inspected is not None
    host = inspected["HostConfig"]
    assert host["Memory"] == 96 * 1024 * 1024
    assert host["NanoCpus"] == 250_000_000
    assert host["PidsLimit"] == 512
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["RestartPolicy"]["Name"] in {"no", ""}
    assert host["PortBindings"] == {
        f"{port['port']}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port["port"])}]
    }
    labels = inspected["Config"]["Labels"]
    assert labels["io.lightd.managed"] == "true"
    assert labels["io.lightd.internal_id"] == cid
    assert labels["io.lightd.role"] == "main"
    assert labels["io.lightd.node"] == (lab.daemon.data_dir / "node.id").read_text().strip()
    assert labels["io.lightd.spec_hash"]
    assert inspected["Config"]["WorkingDir"] == "/home/container"
    assert inspected["Config"]["OpenStdin"] is True
    assert "GREETING=hi" in inspected["Config"]["Env"]
    mounts = {m["Destination"]: m["Source"] for m in inspected["Mounts"]}
    assert mounts["/home/container"] == lab.volume_path(lab.get(cid)["volume_id"])


def test_kill_stop_start_restart(lab: Lab) -> None:
    cid = lab.create(
        "power",
        startup_command="trap 'echo bye; exit 0' TERM; echo 'Done'; while true; do sleep 1; done",
        start_pattern="Done",
    )
    first = running(lab, cid)
    assert lab.api.post(f"/containers/{cid}/kill").json() == {
        "message": "Container kill initiated",
        "internal_id": cid,
    }
    killed = lab.wait_state(cid, "offline")
    assert killed["power"] == "stopped"
    inspected = engine.inspect(f"lightd-{cid}")
    assert inspected is not None and inspected["State"]["ExitCode"] == 137
    assert lab.get(cid)["crash_count"] == 0

    assert lab.api.post(f"/containers/{cid}/start").json()["message"] == "Container start initiated"
    running(lab, cid)

    assert lab.api.post(f"/containers/{cid}/stop").status_code == 200
    lab.wait_state(cid, "offline")
    inspected = engine.inspect(f"lightd-{cid}")
    assert inspected is not None and inspected["State"]["ExitCode"] == 0  # graceful via SIGTERM

    lab.api.post(f"/containers/{cid}/start")
    before = engine.inspect(f"lightd-{cid}")
    running(lab, cid)
    before = engine.inspect(f"lightd-{cid}")
    assert before is not None
    answer = lab.api.post(f"/containers/{cid}/restart")
    assert answer.json() == {"message": "Container restart initiated", "internal_id": cid}

    def restarted() -> bool:
        now = engine.inspect(f"lightd-{cid}")
        return bool(
            now
            and now["State"]["StartedAt"] != before["State"]["StartedAt"]
            and now["State"]["Running"]
        )

    wait_for(restarted, what="a new start")
    after = running(lab, cid)
    assert after["container_id"] == first["container_id"]  # restarted, not re-created


def test_stop_by_console_command(lab: Lab) -> None:
    cid = lab.create(
        "cmdstop",
        startup_command="echo ready; while read line; do "
        'if [ "$line" = quit ]; then echo saving; exit 0; fi; done',
        stop={"command": "quit", "timeout_seconds": 10},
    )
    running(lab, cid)
    lab.api.post(f"/containers/{cid}/stop")
    lab.wait_state(cid, "offline")
    inspected = engine.inspect(f"lightd-{cid}")
    assert inspected is not None and inspected["State"]["ExitCode"] == 0


def test_reinstall_runs_install_again_and_returns_to_running(lab: Lab) -> None:
    volume = lab.volume()
    cid = lab.create(
        "reinst", volume_id=volume, install_script="echo one >> /mnt/server/installs.txt"
    )
    running(lab, cid)
    answer = lab.api.post(
        f"/containers/{cid}/reinstall",
        json={"install_script": "echo two >> /mnt/server/installs.txt"},
    )
    assert answer.json() == {"message": "Container reinstall started", "internal_id": cid}
    path = Path(lab.volume_path(volume)) / "installs.txt"
    wait_for(lambda: path.read_text() == "one\ntwo\n", what="second install")
    running(lab, cid)
    assert lab.get(cid)["install_state"] == "ready"


def test_rebind_changes_ports_in_engine_and_pool(lab: Lab) -> None:
    old = lab.pool_port()
    new = lab.pool_port()
    cid = lab.create("rebind", ports=[old])
    first = running(lab, cid)
    pool = {p["port"]: p for p in lab.api.get("/network/ports").json()["ports"]}
    assert pool[old["port"]]["in_use"] is True and pool[old["port"]]["container"] == cid
    answer = lab.api.post(f"/containers/{cid}/rebind-network", json={"ports": [new]})
    assert answer.json() == {"message": "Network rebinding started", "internal_id": cid}

    def rebound() -> bool:
        inspected = engine.inspect(f"lightd-{cid}")
        return bool(
            inspected
            and f"{new['port']}/tcp" in (inspected["HostConfig"]["PortBindings"] or {})
            and inspected["State"]["Running"]
        )

    wait_for(rebound, what="new binding")
    after = running(lab, cid)
    assert after["container_id"] != first["container_id"]  # re-created with new bindings
    assert after["power"] == "running"
    inspected = engine.inspect(f"lightd-{cid}")
    assert inspected is not None
    assert list(inspected["HostConfig"]["PortBindings"]) == [f"{new['port']}/tcp"]
    assert inspected["Config"]["OpenStdin"] is True
    pool = {p["port"]: p for p in lab.api.get("/network/ports").json()["ports"]}
    assert pool[old["port"]]["in_use"] is False
    assert pool[new["port"]]["in_use"] is True and pool[new["port"]]["container"] == cid


def test_rebind_to_port_outside_pool_is_400(lab: Lab) -> None:
    cid = lab.create("rebind-bad")
    lab.wait(cid, lambda c: c["install_state"] == "ready", what="ready")
    answer = lab.api.post(
        f"/containers/{cid}/rebind-network",
        json={"ports": [{"ip": "127.0.0.1", "port": 1, "protocol": "tcp"}]},
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "Invalid port binding: port not in network pool"}


def test_rebind_while_installing_is_400(lab: Lab) -> None:
    port = lab.pool_port()
    cid = lab.create("rebind-inst", install_script="sleep 5")
    lab.wait(cid, lambda c: c["install_state"] == "installing", what="installing")
    answer = lab.api.post(f"/containers/{cid}/rebind-network", json={"ports": [port]})
    assert answer.status_code == 400
    assert answer.json() == {"error": "Cannot rebind network while container is installing"}


def test_delete_leaves_no_docker_object(lab: Lab) -> None:
    port = lab.pool_port()
    volume = lab.volume()
    cid = lab.create(
        "del", ports=[port], volume_id=volume, install_script="echo x > /mnt/server/keep"
    )
    running(lab, cid)
    answer = lab.api.delete(f"/containers/{cid}")
    assert answer.json() == {"message": "Container deleted successfully"}
    lab.wait_gone(cid)
    assert lab.api.get(f"/containers/{cid}").status_code == 404
    assert Path(lab.volume_path(volume), "keep").exists()  # the volume stays
    pool = {p["port"]: p for p in lab.api.get("/network/ports").json()["ports"]}
    assert pool[port["port"]]["in_use"] is False
    wait_for(
        lambda: not (lab.daemon.data_dir / "state" / "containers" / f"{cid}.json").exists(),
        what="observed state removed",
    )


def test_removed_behind_our_back_is_recreated(lab: Lab) -> None:
    cid = lab.create("rmf")
    first = running(lab, cid)
    with engine.client() as client:
        client.api.remove_container(f"lightd-{cid}", force=True)
    after = lab.wait(
        cid,
        lambda c: c["state"] == "running" and c["container_id"] != first["container_id"],
        what="re-created",
    )
    assert engine.inspect(f"lightd-{cid}") is not None
    assert after["crash_count"] == 0 or after["crash_count"] == 1


def test_memory_changed_behind_our_back_is_reverted(lab: Lab) -> None:
    cid = lab.create("upd", limits={"memory": 64 * 1024 * 1024})
    first = running(lab, cid)
    with engine.client() as client:
        client.api.update_container(f"lightd-{cid}", mem_limit="128m", memswap_limit="128m")

    def reverted() -> bool:
        inspected = engine.inspect(f"lightd-{cid}")
        return bool(inspected and inspected["HostConfig"]["Memory"] == 64 * 1024 * 1024)

    wait_for(reverted, what="memory reverted")
    assert lab.get(cid)["container_id"] == first["container_id"]  # updated live, not re-created


def test_crash_loop_backs_off_then_gives_up(lab: Lab) -> None:
    cid = lab.create("crash", startup_command="echo dying; sleep 0.3; exit 7")
    state = lab.wait(
        cid, lambda c: "not restarting" in (c["last_error"] or ""), what="gave up", timeout=60
    )
    assert state["crash_count"] == 3
    assert state["state"] == "offline"
    assert state["exit_code"] == 7
    time.sleep(3)
    assert lab.get(cid)["crash_count"] == 3  # no further restarts
    lab.api.post(f"/containers/{cid}/start")  # a start asks for another try
    lab.wait(
        cid,
        lambda c: c["crash_count"] >= 1 and "not restarting" not in (c["last_error"] or ""),
        what="retried",
        timeout=20,
    )


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        pytest.param({"internal_id": ".hidden"}, "internal_id", id="dot-id"),
        pytest.param({"internal_id": "a/b"}, "internal_id", id="slash-id"),
        pytest.param({"internal_id": "x" * 65}, "internal_id", id="long-id"),
        pytest.param({"internal_id": ""}, "internal_id", id="empty-id"),
        pytest.param({"start_pattern": "(unclosed"}, "start_pattern", id="bad-regex"),
        pytest.param({"limits": {"memory": 1024}}, "limits.memory", id="tiny-memory"),
        pytest.param({"limits": {"cpu": 0}}, "limits.cpu", id="zero-cpu"),
        pytest.param({"limits": {"cpu": 1024}}, "limits.cpu", id="too-many-cpus"),
        pytest.param({"image": ""}, "image", id="empty-image"),
        pytest.param({"ports": [{"ip": "nope", "port": 1}]}, "ports.0.ip", id="bad-ip"),
        pytest.param(
            {"ports": [{"ip": "127.0.0.1", "port": 70000}]}, "ports.0.port", id="port-range"
        ),
        pytest.param({"mount": {"/etc": "/data"}}, "mount", id="mount-not-allowed"),
        pytest.param({"mount": {"relative": "/data"}}, "mount", id="mount-relative"),
        pytest.param({"power": "paused"}, "power", id="bad-power"),
        pytest.param({"unknown": 1}, "unknown", id="unknown-field"),
    ],
)
def test_invalid_create_bodies_are_400(lab: Lab, changes: dict[str, object], needle: str) -> None:
    body = lab.body("bad", **changes)
    answer = lab.api.post("/containers", json=body)
    assert answer.status_code == 400, answer.text
    assert needle in answer.json()["error"]


def test_missing_volume_is_404(lab: Lab) -> None:
    body = lab.body("novol", volume_id="00000000-0000-4000-8000-000000000000")
    answer = lab.api.post("/containers", json=body)
    assert answer.status_code == 404
    assert answer.json() == {"error": "Volume not found"}


def test_port_not_in_pool_is_400(lab: Lab) -> None:
    body = lab.body("nopool", ports=[{"ip": "127.0.0.1", "port": 2, "protocol": "tcp"}])
    answer = lab.api.post("/containers", json=body)
    assert answer.status_code == 400
    assert answer.json() == {"error": "Invalid port binding: port not in network pool"}


def test_port_bound_by_another_container_is_409(lab: Lab) -> None:
    port = lab.pool_port()
    lab.create("owner", ports=[port], power="stopped")
    answer = lab.api.post("/containers", json=lab.body("thief", ports=[port]))
    assert answer.status_code == 409
    assert "in use by container" in answer.json()["error"]


def test_duplicate_create_is_409(lab: Lab) -> None:
    lab.create("dup", power="stopped")
    answer = lab.api.post("/containers", json=lab.body("dup"))
    assert answer.status_code == 409


def test_documented_body_with_limits_and_ports_works(lab: Lab) -> None:
    port = lab.pool_port()
    cid = lab.create(
        "doc",
        ports=[port],
        limits={"memory": 1073741824, "cpu": 1.0},
        install_script="#!/bin/sh\necho ok",
    )
    document = (lab.daemon.desired_dir / "containers" / f"{cid}.json").read_text()
    assert '"memory": 1073741824' in document
    assert f'"port": {port["port"]}' in document
    shown = lab.get(cid)
    assert shown["limits"]["memory"] == 1073741824
    assert shown["ports"] == [port]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/start"),
        ("POST", "/stop"),
        ("POST", "/kill"),
        ("POST", "/restart"),
        ("POST", "/reinstall"),
        ("POST", "/rebind-network"),
        ("GET", "/install-log"),
    ],
)
@pytest.mark.parametrize("name", ["nope-404", "..", "%2e%2e"])
def test_unknown_container_is_404_everywhere(
    api: httpx.Client, method: str, path: str, name: str
) -> None:
    body = {"ports": []} if path == "/rebind-network" else None
    answer = api.request(method, f"/containers/{name}{path}", json=body)
    assert answer.status_code == 404, answer.text
    assert answer.json() == {"error": "Container not found"} or name == ".."


def test_second_reconcile_plans_nothing(lab: Lab) -> None:
    cid = lab.create("idle")
    running(lab, cid)
    time.sleep(1)
    before = lab.daemon.log().count(f"{cid}: ")
    time.sleep(4.5)  # two resyncs (2 s) pass
    assert lab.daemon.log().count(f"{cid}: ") == before
    shown = lab.get(cid)
    assert shown["revision_applied"] == shown["revision_desired"]


def test_desired_document_is_canonical(lab: Lab) -> None:
    cid = lab.create("canon", power="stopped")
    raw = (lab.daemon.desired_dir / "containers" / f"{cid}.json").read_bytes()
    assert raw.endswith(b"}\n")
    assert b'\n  "image": ' in raw
    assert os.stat(lab.daemon.desired_dir / "containers" / f"{cid}.json").st_size == len(raw)


def test_volume_in_use_cannot_be_deleted(lab: Lab) -> None:
    volume = lab.volume()
    cid = lab.create("volbusy", volume_id=volume, power="stopped")
    answer = lab.api.delete(f"/volumes/{volume}")
    assert answer.status_code == 409
    assert cid in answer.json()["error"]
    lab.api.delete(f"/containers/{cid}")
    lab.wait_gone(cid)
    assert lab.api.delete(f"/volumes/{volume}").status_code == 200


def test_volume_prefix_is_resolved_to_full_id(lab: Lab) -> None:
    volume = lab.volume()
    cid = lab.create("volprefix", volume_id=volume[:8], power="stopped")
    assert lab.get(cid)["volume_id"] == volume
