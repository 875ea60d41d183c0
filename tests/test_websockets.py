"""Live streams over real WebSockets: console, stats, events, commands, tokens, node watch."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.lab import Lab
from tests.support.ws import ConnectionClosed, Watcher, open_socket, refused_status

ECHO = "echo 'Done!'; while read line; do echo \"got: $line\"; done"


def token_path(lab: Lab, cid: str, token: str | None = None) -> str:
    return f"/ws/{cid}?token={token or lab.daemon.token}"


def running_echo(lab: Lab, name: str = "echo", **changes: object) -> str:
    cid = lab.create(name, startup_command=ECHO, start_pattern="Done", **changes)
    lab.wait_state(cid, "running")
    return cid


def test_connect_gets_logs_state_and_stats(lab: Lab) -> None:
    cid = running_echo(lab)
    with Watcher(lab.daemon, token_path(lab, cid)) as watcher:
        first = watcher.recv()
        assert first["event"] == "logs"
        assert "Done!" in first["data"]
        assert watcher.recv() == {"event": "event", "data": "running"}
        stats = watcher.until(lambda e: e["event"] == "stats", what="stats")
        assert set(stats) == {
            "event",
            "cpu_usage",
            "memory_usage",
            "memory_limit",
            "network_rx",
            "network_tx",
            "block_read",
            "block_write",
            "disk_usage",
            "disk_limit",
        }
        assert stats["memory_limit"] == 64 * 1024 * 1024
        assert stats["disk_limit"] == 0  # the volume has no disk limit
        assert stats["disk_usage"] >= 0
        assert 0 < stats["memory_usage"] <= stats["memory_limit"]


def test_send_command_reaches_stdin(lab: Lab) -> None:
    cid = running_echo(lab)
    with Watcher(lab.daemon, token_path(lab, cid)) as watcher:
        watcher.send({"event": "send_command", "command": "say hello"})
        line = watcher.until(lambda e: e["event"] == "console" and "got: say hello" in e["data"])
        assert line["data"].endswith("\n")


def test_http_command_and_logs(lab: Lab) -> None:
    cid = running_echo(lab)
    answer = lab.api.post(f"/containers/{cid}/command", json={"command": "via http"})
    assert answer.status_code == 200, answer.text

    def logged() -> bool:
        data = lab.api.get(f"/containers/{cid}/logs", params={"lines": 5}).json()["data"]
        return "got: via http" in data

    from tests.support.daemon import wait_for

    wait_for(logged, what="command output in logs")
    logs = lab.api.get(f"/containers/{cid}/logs", params={"lines": 1}).json()
    assert logs["data"].count("\n") == 1
    assert lab.api.post(f"/containers/{cid}/command", json={"command": "a\nb"}).status_code == 400
    assert lab.api.get(f"/containers/{cid}/logs", params={"lines": 0}).status_code == 400


def test_command_to_stopped_container_is_409(lab: Lab) -> None:
    cid = lab.create("stopped", power="stopped")
    lab.wait(cid, lambda c: c["container_id"] is not None, what="created")
    answer = lab.api.post(f"/containers/{cid}/command", json={"command": "x"})
    assert answer.status_code == 409
    assert answer.json() == {"error": "Container is not running"}
    with Watcher(lab.daemon, token_path(lab, cid)) as watcher:
        watcher.send({"event": "send_command", "command": "x"})
        error = watcher.until(lambda e: e["event"] == "error")
        assert error["data"] == "Container is not running"


def test_inbound_messages(lab: Lab) -> None:
    cid = running_echo(lab)
    with Watcher(lab.daemon, token_path(lab, cid)) as watcher:
        for bad in [
            "not json",
            "[1]",
            '{"no": "event"}',
            '{"event": "dance"}',
            '{"event": "logs", "lines": -1}',
            '{"event": "power", "action": "explode"}',
            '{"event": "send_command", "command": 5}',
        ]:
            watcher.send(bad)
            error = watcher.until(lambda e: e["event"] == "error", what=f"error for {bad}")
            assert error["data"]
        watcher.send({"event": "send_command", "command": "one"})
        watcher.send({"event": "send_command", "command": "two"})
        watcher.until(lambda e: e["event"] == "console" and "got: two" in e["data"])
        watcher.send({"event": "logs", "lines": 2})
        logs = watcher.until(lambda e: e["event"] == "logs")
        assert logs["data"] == "got: one\ngot: two\n"
        watcher.send({"event": "stats"})
        watcher.until(lambda e: e["event"] == "stats")
        watcher.send({"event": "power", "action": "kill"})
        watcher.until(lambda e: e == {"event": "event", "data": "exit"}, what="exit")
        watcher.send({"event": "power", "action": "start"})
        watcher.until(lambda e: e == {"event": "event", "data": "starting"}, what="starting")
        watcher.until(lambda e: e == {"event": "event", "data": "running"}, what="running")


def test_install_output_and_events_stream(lab: Lab) -> None:
    volume = lab.volume()
    body = lab.body(
        "inst",
        volume_id=volume,
        install_script="sleep 1; echo fetching files; sleep 1",
        startup_command="sleep 1; echo 'Server Done'; exec sleep 1000",
        start_pattern="Done",
        power="stopped",
    )
    assert lab.api.post("/containers", json=body).status_code == 200
    cid = body["internal_id"]
    lab.created.append(cid)
    with Watcher(lab.daemon, token_path(lab, cid)) as watcher:
        watcher.until(
            lambda e: e["event"] == "console" and "fetching files" in e["data"],
            what="install output",
        )
        watcher.until(lambda e: e == {"event": "event", "data": "ready"}, what="ready")
        lab.api.post(f"/containers/{cid}/start")
        watcher.until(lambda e: e == {"event": "event", "data": "starting"}, what="starting")
        watcher.until(lambda e: e == {"event": "event", "data": "running"}, what="running")
        assert "Server Done" in watcher.console_text()


def test_failed_install_sends_failed(lab: Lab) -> None:
    body = lab.body("fail", install_script="sleep 1; exit 4")
    assert lab.api.post("/containers", json=body).status_code == 200
    lab.created.append(body["internal_id"])
    with Watcher(lab.daemon, token_path(lab, body["internal_id"])) as watcher:
        watcher.until(lambda e: e == {"event": "event", "data": "failed"}, what="failed")
        message = watcher.until(lambda e: e["event"] == "daemon_message")
        assert "exit code 4" in message["data"]


def test_fifty_watchers_one_reader(lab: Lab) -> None:
    cid = running_echo(lab)
    before = lab.api.get("/system").json()["runtime"]
    watchers = [Watcher(lab.daemon, token_path(lab, cid)) for _ in range(50)]
    try:
        for watcher in watchers:
            watcher.until(lambda e: e["event"] == "event")
        during = lab.api.get("/system").json()["runtime"]
        assert during["console_readers"] == before["console_readers"]
        assert during["stats_readers"] <= before["stats_readers"] + 1
        assert during["container_sockets"] >= 50
        for n in range(5):
            lab.api.post(f"/containers/{cid}/command", json={"command": f"line {n}"})
        for watcher in watchers:
            watcher.until(lambda e: e["event"] == "console" and "got: line 4" in e["data"])
            text = watcher.console_text()
            assert [f"got: line {n}" in text for n in range(5)] == [True] * 5
    finally:
        for watcher in watchers:
            watcher.close()
    time.sleep(1.5)
    after = lab.api.get("/system").json()["runtime"]
    assert after["stats_readers"] == before["stats_readers"]
    assert after["container_sockets"] == before["container_sockets"]


def test_stalled_client_does_not_delay_others(lab: Lab) -> None:
    cid = lab.create(
        "noisy",
        startup_command='echo Done; i=0; while true; do i=$((i+1)); echo "tick $i"; '
        "usleep 2000; done",
        start_pattern="Done",
    )
    lab.wait_state(cid, "running")
    stalled = open_socket(f"{lab.daemon.ws_url}{token_path(lab, cid)}", max_queue=1)
    try:
        with Watcher(lab.daemon, token_path(lab, cid)) as reader:
            reader.until(lambda e: e["event"] == "console")
            started = time.monotonic()
            count = 0
            while time.monotonic() - started < 6:
                event = reader.recv(timeout=2)
                if event["event"] == "console":
                    count += event["data"].count("tick")
            assert count > 500  # keeps flowing while the other client reads nothing
            assert "dropped" not in " ".join(str(e.get("data")) for e in reader.seen)
    finally:
        stalled.close()


def test_throttle_notice(lab: Lab) -> None:
    cid = lab.create(
        "flood",
        startup_command="echo Done; sleep 1; yes flood | head -n 200000; exec sleep 1000",
        start_pattern="Done",
    )
    with Watcher(lab.daemon, token_path(lab, cid)) as watcher:
        notice = watcher.until(
            lambda e: e["event"] == "console" and "too fast" in e["data"],
            what="notice",
            timeout=30,
        )
        assert notice["data"].count("[lightd]") == 1
    lab.wait_state(cid, "running")


def test_token_cases(lab: Lab) -> None:
    cid = running_echo(lab)
    other = f"{lab.prefix}-other"
    mint = lambda **body: lab.api.post("/auth/tokens", json=body).json()["token"]  # noqa: E731
    assert refused_status(lab.daemon, f"/ws/{cid}") == 401
    assert refused_status(lab.daemon, f"/ws/{cid}?token=lightd_wrong") == 401
    assert refused_status(lab.daemon, f"/ws/{lab.prefix}-missing?token={lab.daemon.token}") == 404
    assert refused_status(lab.daemon, token_path(lab, cid, mint(ttl="1h", container=other))) == 401

    scoped = mint(ttl="1h", container=cid)
    with Watcher(lab.daemon, token_path(lab, cid, scoped)) as watcher:
        assert watcher.recv()["event"] == "logs"

    single = mint(ttl="1h", remove_on_use=True)
    with Watcher(lab.daemon, token_path(lab, cid, single)) as watcher:
        watcher.recv()
        watcher.send({"event": "send_command", "command": "still here"})
        watcher.until(lambda e: e["event"] == "console" and "still here" in e["data"])
        assert refused_status(lab.daemon, token_path(lab, cid, single)) == 401

    short = mint(ttl="2s")
    with Watcher(lab.daemon, token_path(lab, cid, short)) as watcher:
        message = watcher.until(
            lambda e: e["event"] == "daemon_message" and "expired" in e["data"], timeout=10
        )
        assert message["data"].startswith("Token expired")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                watcher.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    assert refused_status(lab.daemon, token_path(lab, cid, short)) == 401


def test_socket_limit(fresh_daemon: object) -> None:
    from tests.support.daemon import DaemonProcess
    from tests.support.lab import new_prefix

    assert isinstance(fresh_daemon, DaemonProcess)
    fresh_daemon.extra_env["LIGHTD_WEBSOCKET__MAX_SOCKETS_PER_CONTAINER"] = "2"
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        corner = Lab(fresh_daemon, api, new_prefix())
        try:
            cid = corner.create("limit", power="stopped")
            path = token_path(corner, cid)
            with Watcher(fresh_daemon, path), Watcher(fresh_daemon, path):
                assert refused_status(fresh_daemon, path) == 429
            with Watcher(fresh_daemon, path) as again:
                assert again.recv()["event"] == "logs"
        finally:
            corner.cleanup()


def test_oversized_frame_is_refused(lab: Lab) -> None:
    cid = running_echo(lab)
    with Watcher(lab.daemon, token_path(lab, cid)) as watcher:
        watcher.send({"event": "send_command", "command": "x" * (40 * 1024)})
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                watcher.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_node_watch_stream(lab: Lab) -> None:
    watch_path = f"/watch?token={lab.daemon.token}"
    assert refused_status(lab.daemon, "/watch") == 401
    minted = lab.api.post("/auth/tokens", json={"ttl": "1h"}).json()["token"]
    assert refused_status(lab.daemon, f"/watch?token={minted}") == 401
    with Watcher(lab.daemon, watch_path) as watcher:
        snapshot = watcher.recv()
        assert snapshot["event"] == "snapshot"
        assert {"resource_version", "containers", "ports"} <= set(snapshot)
        port = lab.pool_port()
        port_id = f"127.0.0.1:{port['port']}"
        added_port = watcher.until(lambda e: e.get("kind") == "port" and e["id"] == port_id)
        assert added_port["type"] == "ADDED"
        cid = lab.create("watched", ports=[port])
        added = watcher.until(lambda e: e.get("kind") == "container" and e["id"] == cid)
        assert added["type"] == "ADDED"
        assert added["object"]["internal_id"] == cid
        watcher.until(
            lambda e: e.get("id") == port_id and e["object"]["container"] == cid, what="port bound"
        )
        watcher.until(
            lambda e: e.get("id") == cid and e["object"]["state"] == "running", what="running"
        )
        mark = watcher.seen[-1]["resource_version"]
    lab.api.post(f"/containers/{cid}/kill")
    lab.wait_state(cid, "offline")
    lab.api.delete(f"/containers/{cid}")
    lab.wait_gone(cid)
    time.sleep(0.5)
    with Watcher(lab.daemon, f"{watch_path}&since={mark}") as resumed:
        resumed.until(lambda e: e.get("id") == cid and e["type"] == "DELETED", what="deleted")
        # The deleted document's port is free again (its own refresh, not a pass over all).
        resumed.until(
            lambda e: e.get("id") == port_id and e["object"]["container"] is None,
            what="port unbound",
        )
        kinds = [e["type"] for e in resumed.seen if e.get("id") == cid]
        assert kinds[-1] == "DELETED" and "MODIFIED" in kinds
        versions = [e["resource_version"] for e in resumed.seen if "resource_version" in e]
        assert versions == sorted(versions) and versions[0] > mark
        assert all(e["event"] == "changed" for e in resumed.seen)
    with Watcher(lab.daemon, f"{watch_path}&since=999999999") as fresh:
        assert fresh.recv()["event"] == "snapshot"


def test_quiet_resync_sends_nothing(lab: Lab) -> None:
    cid = running_echo(lab, "quiet")
    time.sleep(1)
    with Watcher(lab.daemon, f"/watch?token={lab.daemon.token}") as watcher:
        watcher.recv()  # snapshot
        time.sleep(5)  # two resyncs (2 s) pass
        quiet = []
        try:
            while True:
                event = watcher.recv(timeout=0.5)
                if event.get("id") == cid:
                    quiet.append(event)
        except TimeoutError:
            pass
        assert quiet == []


def test_http_helpers_404(api: httpx.Client) -> None:
    assert api.post("/containers/nope-x/command", json={"command": "x"}).status_code == 404
    assert api.get("/containers/nope-x/logs").status_code == 404
