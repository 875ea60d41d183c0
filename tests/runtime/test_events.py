"""The WebSocket lifecycle events an observed change means, in order: one row per case."""

from __future__ import annotations

from typing import Any

import pytest

from lightd.runtime.events import lifecycle_events, state_event
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState


def obs(**changes: Any) -> ObservedContainer:
    base = ObservedContainer(internal_id="mc-1", install_state=InstallState.READY)
    return base.model_copy(update=changes)


def ev(data: str) -> dict[str, str]:
    return {"event": "event", "data": data}


def msg(data: str) -> dict[str, str]:
    return {"event": "daemon_message", "data": data}


INSTALLING = obs(install_state=InstallState.INSTALLING, install_started_at=10.0)

CASES = [
    pytest.param(None, INSTALLING, [ev("installing")], id="a-new-container-announces-its-install"),
    pytest.param(None, obs(), [ev("ready")], id="a-new-container-without-install-is-ready"),
    pytest.param(
        INSTALLING,
        obs(install_state=InstallState.INSTALLING, install_started_at=20.0),
        [ev("installing")],
        id="a-second-install-announces-itself-again",
    ),
    pytest.param(INSTALLING, INSTALLING, [], id="an-unchanged-install-says-nothing"),
    pytest.param(INSTALLING, obs(), [ev("ready")], id="a-finished-install-is-ready"),
    pytest.param(
        INSTALLING,
        obs(install_state=InstallState.FAILED, last_error="Install script failed with exit code 1"),
        [ev("failed"), msg("Install script failed with exit code 1")],
        id="a-failed-install-says-failed-then-why",
    ),
    pytest.param(
        obs(), obs(state=RuntimeState.STARTING), [ev("starting")], id="a-start-says-starting"
    ),
    pytest.param(
        obs(state=RuntimeState.STARTING),
        obs(state=RuntimeState.RUNNING),
        [ev("running"), msg("Container started")],
        id="running-is-followed-by-container-started",
    ),
    pytest.param(
        obs(),
        obs(state=RuntimeState.RUNNING),
        [ev("running"), msg("Container started")],
        id="a-start-without-pattern-goes-straight-to-running",
    ),
    pytest.param(
        obs(state=RuntimeState.RUNNING),
        obs(state=RuntimeState.STOPPING),
        [ev("stopping")],
        id="a-stop-says-stopping",
    ),
    pytest.param(
        obs(state=RuntimeState.STOPPING),
        obs(state=RuntimeState.OFFLINE),
        [ev("exit")],
        id="offline-is-sent-as-exit",
    ),
    pytest.param(
        obs(state=RuntimeState.RUNNING),
        obs(state=RuntimeState.OFFLINE, last_error="Crashed with exit code 3"),
        [ev("exit"), msg("Crashed with exit code 3")],
        id="a-crash-says-exit-then-why",
    ),
    pytest.param(
        obs(state=RuntimeState.RUNNING, last_error="x"),
        obs(state=RuntimeState.RUNNING, last_error="x"),
        [],
        id="a-repeated-error-is-not-repeated",
    ),
    pytest.param(
        obs(last_error="old"), obs(last_error=None), [], id="a-cleared-error-says-nothing"
    ),
    pytest.param(
        INSTALLING,
        obs(state=RuntimeState.RUNNING),
        [ev("ready"), ev("running"), msg("Container started")],
        id="install-events-come-before-runtime-events",
    ),
    pytest.param(obs(), None, [msg("Container deleted")], id="a-deletion-says-deleted"),
]


@pytest.mark.parametrize(("old", "new", "expected"), CASES)
def test_lifecycle_events(
    old: ObservedContainer | None, new: ObservedContainer | None, expected: list[dict[str, str]]
) -> None:
    assert lifecycle_events(old, new) == expected


@pytest.mark.parametrize(
    ("observed", "data"),
    [
        pytest.param(INSTALLING, "installing", id="while-installing-a-watcher-hears-installing"),
        pytest.param(
            obs(install_state=InstallState.FAILED), "failed", id="after-a-failed-install-failed"
        ),
        pytest.param(obs(), "exit", id="a-ready-offline-container-is-exit"),
        pytest.param(obs(state=RuntimeState.RUNNING), "running", id="a-running-one-is-running"),
    ],
)
def test_state_event_for_a_new_watcher(observed: ObservedContainer, data: str) -> None:
    assert state_event(observed) == ev(data)
