"""The pure planner: a table of situations and the one step each must plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lightd.reconcile.model import ActionKind, Actual, ActualContainer
from lightd.reconcile.planner import Policy, crash_delay, plan, resources_of
from lightd.spec.container import ContainerSpec, install_key, recreate_hash
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState

VOLUME = "/data/volumes/v1"
NOW = 1_000_000.0
POLICY = Policy()


def spec(**changes: object) -> ContainerSpec:
    base: dict[str, object] = {
        "internal_id": "mc-1",
        "image": "lightd-test/busybox:latest",
        "volume_id": "0123456789abcdef",
        "startup_command": "sleep 1000",
        "limits": {"memory": 64 * 1024 * 1024, "cpu": 0.5},
    }
    base.update(changes)
    return ContainerSpec.model_validate(base)


def ready(desired: ContainerSpec, **changes: object) -> ObservedContainer:
    base = ObservedContainer(
        internal_id=desired.internal_id,
        install_state=InstallState.READY,
        install_key=install_key(desired),
        install_image=desired.image,
    )
    return base.model_copy(update=changes)


def main(desired: ContainerSpec, **changes: object) -> ActualContainer:
    res = resources_of(desired)
    base = ActualContainer(
        id="c1",
        name="lightd-mc-1",
        managed=True,
        internal_id=desired.internal_id,
        role="main",
        spec_hash=recreate_hash(desired, volume_path=VOLUME),
        running=True,
        status="running",
        exit_code=0,
        started_at=NOW - 100,
        finished_at=None,
        memory=res.memory,
        memory_swap=res.memory_swap,
        nano_cpus=res.nano_cpus,
        pids_limit=res.pids_limit,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def kinds(
    desired: ContainerSpec | None,
    observed: ObservedContainer | None,
    actual: Actual,
    *,
    now: float = NOW,
) -> list[ActionKind]:
    result = plan(
        desired=desired,
        observed=observed,
        actual=actual,
        volume_path=VOLUME,
        now=now,
        policy=POLICY,
    )
    return [action.kind for action in result.actions]


D = spec()
D_SCRIPT = spec(install_script="echo hi")
D_STOPPED = spec(power="stopped")
NONE = Actual(main=None, install=None)

CASES = [
    pytest.param(D, None, NONE, [ActionKind.SKIP_INSTALL], id="new-without-script-skips-install"),
    pytest.param(
        D_SCRIPT, None, NONE, [ActionKind.ENSURE_IMAGE, ActionKind.START_INSTALL], id="new-installs"
    ),
    pytest.param(
        D_SCRIPT,
        ready(D_SCRIPT, install_state=InstallState.INSTALLING, install_started_at=NOW - 5),
        Actual(
            main=None, install=replace(main(D_SCRIPT), role="install", running=False, exit_code=0)
        ),
        [ActionKind.FINISH_INSTALL],
        id="install-exited",
    ),
    pytest.param(
        D_SCRIPT,
        ready(D_SCRIPT, install_state=InstallState.INSTALLING, install_started_at=NOW - 4000),
        Actual(main=None, install=replace(main(D_SCRIPT), role="install")),
        [ActionKind.KILL_INSTALL],
        id="install-timed-out",
    ),
    pytest.param(
        D_SCRIPT,
        ready(D_SCRIPT, install_state=InstallState.FAILED),
        NONE,
        [],
        id="failed-install-waits",
    ),
    pytest.param(
        D,
        ready(D),
        NONE,
        [ActionKind.ENSURE_IMAGE, ActionKind.CREATE_MAIN, ActionKind.START_MAIN],
        id="ready-creates-and-starts",
    ),
    pytest.param(
        D_STOPPED,
        ready(D_STOPPED),
        NONE,
        [ActionKind.ENSURE_IMAGE, ActionKind.CREATE_MAIN],
        id="stopped-creates-only",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.OFFLINE),
        Actual(main=main(D, running=False), install=None),
        [ActionKind.START_MAIN],
        id="created-starts",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [],
        id="converged-running",
    ),
    pytest.param(
        D_STOPPED,
        ready(D_STOPPED, state=RuntimeState.OFFLINE),
        Actual(main=main(D_STOPPED, running=False), install=None),
        [],
        id="converged-stopped",
    ),
    pytest.param(
        D_STOPPED,
        ready(D_STOPPED, state=RuntimeState.RUNNING),
        Actual(main=main(D_STOPPED), install=None),
        [ActionKind.STOP_MAIN],
        id="power-stopped-stops",
    ),
    pytest.param(
        spec(power="stopped", kill_requested_at=5.0),
        ready(D_STOPPED, state=RuntimeState.RUNNING),
        Actual(main=main(D_STOPPED), install=None),
        [ActionKind.KILL_MAIN],
        id="kill-kills",
    ),
    pytest.param(
        spec(image="other:1"),
        ready(spec(image="other:1"), state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [ActionKind.REMOVE_MAIN],
        id="image-change-recreates",
    ),
    pytest.param(
        spec(limits={"memory": 128 * 1024 * 1024, "cpu": 0.5}),
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [ActionKind.UPDATE_LIMITS],
        id="limit-change-updates-live",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D, running=False, exit_code=1, finished_at=NOW - 10), install=None),
        [ActionKind.RECORD_EXIT],
        id="unasked-exit-is-crash",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D, running=False, exit_code=1, finished_at=NOW - 0.5), install=None),
        [],
        id="crash-grace-waits",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.OFFLINE, crash_times=[NOW - 1], crash_count=1),
        Actual(main=main(D, running=False), install=None),
        [],
        id="crash-backoff-waits",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.OFFLINE, crash_times=[NOW - 11], crash_count=1),
        Actual(main=main(D, running=False), install=None),
        [ActionKind.START_MAIN],
        id="crash-backoff-over-restarts",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.OFFLINE, gave_up=True),
        Actual(main=main(D, running=False), install=None),
        [],
        id="gave-up-stays-down",
    ),
    pytest.param(
        spec(restart_requested_at=7.0),
        ready(D, state=RuntimeState.OFFLINE, gave_up=True),
        Actual(main=main(D, running=False), install=None),
        [ActionKind.START_MAIN],
        id="restart-request-overrides-give-up",
    ),
    pytest.param(
        spec(restart_requested_at=7.0),
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [ActionKind.RESTART_MAIN],
        id="restart-request-restarts",
    ),
    pytest.param(
        spec(restart_requested_at=7.0),
        ready(D, state=RuntimeState.RUNNING, restart_handled=7.0),
        Actual(main=main(D), install=None),
        [],
        id="restart-handled-once",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.RUNNING, engine_available=False),
        Actual(main=main(D, running=False, finished_at=NOW - 0.1), install=None),
        [ActionKind.RECORD_EXIT],
        id="engine-restart-is-no-crash",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.OFFLINE),
        Actual(main=main(D), install=None),
        [ActionKind.MARK_STATE],
        id="running-behind-our-back-adopted",
    ),
    pytest.param(
        None,
        ready(D),
        Actual(main=main(D), install=None),
        [ActionKind.REMOVE_MAIN],
        id="delete-removes-main",
    ),
    pytest.param(None, ready(D), NONE, [ActionKind.FORGET], id="delete-forgets-last"),
    pytest.param(None, None, NONE, [], id="nothing-to-delete"),
    pytest.param(
        D,
        ready(D),
        Actual(main=main(D, managed=False), install=None),
        [ActionKind.REPORT_BLOCKED],
        id="unlabelled-namesake-is-conflict",
    ),
    pytest.param(
        spec(reinstall_requested_at=9.0, install_script="x"),
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [ActionKind.STOP_MAIN],
        id="reinstall-stops-main-first",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "actual", "expected"), CASES)
def test_plan_table(
    desired: ContainerSpec | None,
    observed: ObservedContainer | None,
    actual: Actual,
    expected: list[ActionKind],
) -> None:
    assert kinds(desired, observed, actual) == expected


def test_crash_count_at_max_gives_up() -> None:
    observed = ready(D, state=RuntimeState.RUNNING, crash_times=[NOW - 50 * i for i in range(1, 5)])
    result = plan(
        desired=D,
        observed=observed,
        actual=Actual(main=main(D, running=False, finished_at=NOW - 10), install=None),
        volume_path=VOLUME,
        now=NOW,
        policy=POLICY,
    )
    assert result.actions[0].detail["give_up"] is True


@pytest.mark.parametrize(
    ("count", "delay"), [(0, 0), (1, 10), (2, 20), (3, 40), (6, 300), (9, 300)]
)
def test_crash_backoff_doubles_to_five_minutes(count: int, delay: float) -> None:
    assert crash_delay(count, POLICY) == delay


def test_converged_state_plans_nothing_twice() -> None:
    observed = ready(D, state=RuntimeState.RUNNING)
    actual = Actual(main=main(D), install=None)
    assert kinds(D, observed, actual) == []
    assert kinds(D, observed, actual) == []


def test_missing_volume_is_reported() -> None:
    result = plan(
        desired=D, observed=ready(D), actual=NONE, volume_path=None, now=NOW, policy=POLICY
    )
    assert [a.kind for a in result.actions] == [ActionKind.REPORT_BLOCKED]
    assert result.actions[0].reason == "Volume not found"
