"""The panel hears every state change: real engine, real lightd, a real HTTP panel.

Each test runs its own lightd (``fresh_daemon``) pointed at a :class:`Panel` on
127.0.0.1, with short retry and health intervals so outages last seconds, not minutes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab, new_prefix
from tests.support.panel import Panel

TOKEN = "panel-secret-" + "7" * 20
UP = ["installing", "ready", "starting", "running"]
FAST_REMOTE = {
    "health_interval_seconds": 0.5,
    "timeout_seconds": 2,
    "retry_initial_seconds": 0.1,
    "retry_max_seconds": 0.5,
}


def remote_env(url: str, token: str = TOKEN) -> dict[str, str]:
    env = {
        "LIGHTD_REMOTE__ENABLED": "true",
        "LIGHTD_REMOTE__URL": url,
        "LIGHTD_REMOTE__TOKEN": token,
    }
    env.update({f"LIGHTD_REMOTE__{k.upper()}": str(v) for k, v in FAST_REMOTE.items()})
    return env


@pytest.fixture
def panel() -> Iterator[Panel]:
    """A panel on its own port, not started: each test decides when it is up."""
    p = Panel()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def own_lab(fresh_daemon: DaemonProcess) -> Iterator[Lab]:
    """A Lab on the test's own daemon (which the test starts); cleaned up even on failure."""
    corner = Lab(fresh_daemon, None, new_prefix())  # type: ignore[arg-type]
    try:
        yield corner
    finally:
        try:
            if corner.created:
                if fresh_daemon.proc is None:
                    fresh_daemon.start()
                connect(corner)
                corner.cleanup()
        finally:
            engine.remove_prefixed(corner.prefix)
            if corner.api is not None:
                corner.api.close()


def start(lab: Lab, **env: str) -> None:
    lab.daemon.extra_env.update(env)
    lab.daemon.start()
    connect(lab)


def connect(lab: Lab) -> None:
    if lab.api is not None:
        lab.api.close()
    lab.api = lab.daemon.client()


def remote_view(lab: Lab) -> dict[str, Any]:
    answer = lab.api.get("/remote/config")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["remote"])


def outbox_entries(daemon: DaemonProcess) -> list[dict[str, Any]]:
    path = daemon.data_dir / "remote" / "outbox.json"
    if not path.exists():
        return []
    return list(orjson.loads(path.read_bytes())["entries"])


def test_panel_hears_every_state_change_in_order(panel: Panel, own_lab: Lab) -> None:
    panel.start()
    start(own_lab, **remote_env(panel.url))
    cid = own_lab.create("order", install_script="echo hi")
    own_lab.wait_state(cid, "running")
    assert panel.wait_statuses(cid, UP) == UP
    assert own_lab.api.post(f"/containers/{cid}/kill").status_code == 200
    own_lab.wait_state(cid, "offline")
    assert panel.wait_statuses(cid, [*UP, "stopping", "offline"]) == [
        *UP,
        "stopping",
        "offline",
    ]
    for request in panel.updates(cid):
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert set(request.body) == {"event", "server", "status"}
        assert request.body["event"] == "update"
    # a failed install is told as an error with its message
    bad = own_lab.create("bad", install_script="echo boom >&2\nexit 3")
    own_lab.wait(bad, lambda c: c["install_state"] == "failed", what="install failed")
    told = panel.wait_statuses(bad, ["installing", "error"])
    assert told[0] == "installing"
    assert told[1].startswith("error:") and "exit code 3" in told[1]
    failure = panel.updates(bad)[1].body
    assert failure["error"] == "failed" and failure["event"] == "update"
    wait_for(lambda: remote_view(own_lab)["pending"] == 0, what="outbox empty")
    assert TOKEN not in own_lab.daemon.log()


def test_panel_down_then_back_receives_everything_in_order(panel: Panel, own_lab: Lab) -> None:
    start(own_lab, **remote_env(panel.url))  # the panel is not listening yet
    view = wait_for(
        lambda: (v := remote_view(own_lab))["reachable"] is False and v, what="unreachable"
    )
    assert view["last_checked"] and view["last_error"]
    cid = own_lab.create("outage", install_script="true")
    own_lab.wait_state(cid, "running")
    wait_for(lambda: remote_view(own_lab)["pending"] >= len(UP), what="queued")
    # The panel comes up but answers 503 for a while, then 429: still nothing is lost.
    panel.answer(503)
    panel.start()
    wait_for(lambda: len(panel.updates(cid, accepted=False)) >= 3, what="retries seen")
    panel.answer(429)
    wait_for(lambda: len(panel.updates(cid, accepted=False)) >= 6, what="more retries")
    assert panel.statuses(cid) == []
    panel.answer(200)
    assert panel.wait_statuses(cid, UP) == UP
    view = wait_for(
        lambda: (v := remote_view(own_lab))["reachable"] is True and v["pending"] == 0 and v,
        what="reachable and delivered",
    )
    assert view["last_error"] is None
    # Retries kept the order: every attempt was for the oldest undelivered status.
    attempts = [r.body["status"] for r in panel.updates(cid, accepted=False)]
    assert attempts == sorted(attempts, key=UP.index)


def test_refused_notification_is_dropped_and_later_ones_arrive(panel: Panel, own_lab: Lab) -> None:
    panel.start()
    panel.answer_next(400)  # the first update (installing) is refused
    start(own_lab, **remote_env(panel.url))
    cid = own_lab.create("refused", install_script="true")
    own_lab.wait_state(cid, "running")
    assert panel.wait_statuses(cid, UP[1:]) == UP[1:]
    refused = [r for r in panel.updates(cid, accepted=False) if r.answered == 400]
    assert [r.body["status"] for r in refused] == ["installing"]
    wait_for(lambda: "refused" in own_lab.daemon.log(), what="a log line for the drop")
    assert TOKEN not in own_lab.daemon.log()


def test_busy_panel_is_not_retried_before_its_retry_after(panel: Panel, own_lab: Lab) -> None:
    panel.start()
    # The first update (installing) answered 429 twice, asking for 2 s each time; the
    # configured backoff alone would retry within half a second.
    panel.answer_next(429, 429, retry_after="2")
    start(own_lab, **remote_env(panel.url))
    cid = own_lab.create("busy", install_script="true")
    own_lab.wait_state(cid, "running")
    assert panel.wait_statuses(cid, UP) == UP  # nothing lost, nothing out of order
    attempts = [r for r in panel.updates(cid, accepted=False) if r.body["status"] == "installing"]
    assert [r.answered for r in attempts] == [429, 429, 200]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert all(gap >= 1.9 for gap in gaps), gaps


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_undelivered_notifications_survive_a_restart(
    panel: Panel, own_lab: Lab, kill: bool
) -> None:
    start(own_lab, **remote_env(panel.url))  # panel down
    cid = own_lab.create("survive", install_script="true")
    own_lab.wait_state(cid, "running")
    wait_for(
        lambda: [e["body"].get("status") for e in outbox_entries(own_lab.daemon)] == UP,
        what="the outbox on disk",
    )
    own_lab.daemon.stop(kill=kill)
    panel.start()
    own_lab.daemon.start()
    connect(own_lab)
    assert panel.wait_statuses(cid, UP) == UP
    assert own_lab.get(cid)["state"] == "running"
    wait_for(lambda: remote_view(own_lab)["pending"] == 0, what="outbox empty")
    # The outbox file is rewritten just after the memory copy empties.
    wait_for(lambda: outbox_entries(own_lab.daemon) == [], what="outbox file empty")


def test_reload_switches_url_and_token_live(panel: Panel, own_lab: Lab) -> None:
    second = Panel()
    try:
        panel.start()
        second.start()
        daemon = own_lab.daemon
        daemon.config = {"remote": {"enabled": True, "url": panel.url, "token": "first"}}
        daemon.config["remote"].update(FAST_REMOTE)
        start(own_lab)
        cid = own_lab.create("reload", install_script="true")
        own_lab.wait_state(cid, "running")
        panel.wait_statuses(cid, UP)
        wait_for(lambda: remote_view(own_lab)["reachable"] is True, what="reachable")

        daemon.config["remote"].update({"url": second.url, "token": "second"})
        daemon.config_path.write_bytes(orjson.dumps(daemon.config))
        answer = own_lab.api.post("/remote/config/reload")
        assert answer.json() == {"message": "Configuration reloaded successfully"}
        view = remote_view(own_lab)
        assert (view["url"], view["token"]) == (second.url, "second")
        assert own_lab.api.post(f"/containers/{cid}/kill").status_code == 200
        assert second.wait_statuses(cid, ["stopping", "offline"]) == ["stopping", "offline"]
        assert {r.headers["Authorization"] for r in second.updates(cid)} == {"Bearer second"}
        assert panel.statuses(cid) == UP
        wait_for(lambda: second.health_checks(), what="health asked of the new panel")

        # Disabled: nothing is sent, nothing is lost; enabled again: the latest state.
        daemon.config["remote"]["enabled"] = False
        daemon.config_path.write_bytes(orjson.dumps(daemon.config))
        assert own_lab.api.post("/remote/config/reload").status_code == 200
        assert remote_view(own_lab)["reachable"] is None
        assert own_lab.api.post(f"/containers/{cid}/start").status_code == 200
        own_lab.wait_state(cid, "running")
        assert second.statuses(cid) == ["stopping", "offline"]
        daemon.config["remote"]["enabled"] = True
        daemon.config_path.write_bytes(orjson.dumps(daemon.config))
        assert own_lab.api.post("/remote/config/reload").status_code == 200
        assert second.wait_statuses(cid, ["stopping", "offline", "running"])[-1] == "running"
    finally:
        second.stop()
