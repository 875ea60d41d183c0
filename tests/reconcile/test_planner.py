"""The pure planner: a table of situations and the one step each must plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lightd.engine.records import Actual, ActualContainer
from lightd.reconcile.actions import (
    Action,
    Adopt,
    ClearRefusal,
    Crash,
    CreateMain,
    EnsureImage,
    FinishInstall,
    Forget,
    KillInstall,
    KillMain,
    RecordExit,
    RemoveMain,
    ReportBlocked,
    ReportRefused,
    RestartMain,
    SkipInstall,
    StartInstall,
    StartMain,
    StopMain,
    UpdateLimits,
)
from lightd.reconcile.planner import Gates, Policy, crash_delay, plan, resources_of, settle
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
) -> list[type[Action]]:
    result = plan(
        desired=desired,
        observed=observed,
        actual=actual,
        volume_path=VOLUME,
        now=now,
        policy=POLICY,
    )
    return [type(action) for action in result.actions]


D = spec()
D_SCRIPT = spec(install_script="echo hi")
D_STOPPED = spec(power="stopped")
NONE = Actual(main=None, install=None)

CASES = [
    pytest.param(D, None, NONE, [SkipInstall], id="new-without-script-skips-install"),
    pytest.param(D_SCRIPT, None, NONE, [EnsureImage, StartInstall], id="new-installs"),
    pytest.param(
        D_SCRIPT,
        ready(D_SCRIPT, install_state=InstallState.INSTALLING, install_started_at=NOW - 5),
        Actual(
            main=None, install=replace(main(D_SCRIPT), role="install", running=False, exit_code=0)
        ),
        [FinishInstall],
        id="install-exited",
    ),
    pytest.param(
        D_SCRIPT,
        ready(D_SCRIPT, install_state=InstallState.INSTALLING, install_started_at=NOW - 4000),
        Actual(main=None, install=replace(main(D_SCRIPT), role="install")),
        [KillInstall],
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
        [EnsureImage, CreateMain, StartMain],
        id="ready-creates-and-starts",
    ),
    pytest.param(
        D_STOPPED,
        ready(D_STOPPED),
        NONE,
        [EnsureImage, CreateMain],
        id="stopped-creates-only",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.OFFLINE),
        Actual(main=main(D, running=False), install=None),
        [StartMain],
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
        [StopMain],
        id="power-stopped-stops",
    ),
    pytest.param(
        spec(power="stopped", kill_requested_at=5.0),
        ready(D_STOPPED, state=RuntimeState.RUNNING),
        Actual(main=main(D_STOPPED), install=None),
        [KillMain],
        id="kill-kills",
    ),
    pytest.param(
        spec(image="other:1"),
        ready(spec(image="other:1"), state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [RemoveMain],
        id="image-change-recreates",
    ),
    pytest.param(
        spec(limits={"memory": 128 * 1024 * 1024, "cpu": 0.5}),
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [UpdateLimits],
        id="limit-change-updates-live",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D, running=False, exit_code=1, finished_at=NOW - 10), install=None),
        [RecordExit],
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
        [StartMain],
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
        [StartMain],
        id="restart-request-overrides-give-up",
    ),
    pytest.param(
        spec(restart_requested_at=7.0),
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [RestartMain],
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
        [RecordExit],
        id="engine-restart-is-no-crash",
    ),
    pytest.param(
        D,
        ready(D, state=RuntimeState.OFFLINE),
        Actual(main=main(D), install=None),
        [Adopt],
        id="running-behind-our-back-adopted",
    ),
    pytest.param(
        None,
        ready(D),
        Actual(main=main(D), install=None),
        [RemoveMain],
        id="delete-removes-main",
    ),
    pytest.param(None, ready(D), NONE, [Forget], id="delete-forgets-last"),
    pytest.param(None, None, NONE, [], id="nothing-to-delete"),
    pytest.param(
        D,
        ready(D),
        Actual(main=main(D, managed=False), install=None),
        [ReportBlocked],
        id="unlabelled-namesake-is-conflict",
    ),
    pytest.param(
        spec(reinstall_requested_at=9.0, install_script="x"),
        ready(D, state=RuntimeState.RUNNING),
        Actual(main=main(D), install=None),
        [StopMain],
        id="reinstall-stops-main-first",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "actual", "expected"), CASES)
def test_plan_table(
    desired: ContainerSpec | None,
    observed: ObservedContainer | None,
    actual: Actual,
    expected: list[type[Action]],
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
    exit_action = result.actions[0]
    assert isinstance(exit_action, RecordExit)
    assert exit_action.crash is not None and exit_action.crash.gave_up is True


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
    assert [type(a) for a in result.actions] == [ReportBlocked]
    assert result.actions[0].reason == "Volume not found"


REFUSAL = "Invalid port binding: port not in network pool"
GATE_CASES = [
    pytest.param(
        None,
        ready(D),
        Actual(main=main(D), install=None),
        Gates(held=True),
        [],
        True,
        id="a-held-deletion-removes-nothing",
    ),
    pytest.param(
        D,
        ready(D, blocked_revision="r1", blocked_reason="image not found"),
        NONE,
        Gates(revision="r1"),
        [],
        True,
        id="a-blocked-revision-waits-for-a-new-one",
    ),
    pytest.param(
        D,
        ready(D, blocked_revision="r1", blocked_reason="image not found"),
        NONE,
        Gates(revision="r2"),
        [EnsureImage, CreateMain, StartMain],
        False,
        id="a-new-revision-is-tried-again",
    ),
    pytest.param(
        D, ready(D), NONE, Gates(refusal=REFUSAL), [ReportRefused], True, id="a-refusal-is-reported"
    ),
    pytest.param(
        D,
        ready(D, blocked_reason=REFUSAL),
        NONE,
        Gates(refusal=REFUSAL),
        [],
        True,
        id="a-reported-refusal-is-not-reported-again",
    ),
    pytest.param(
        D,
        ready(D, blocked_reason=REFUSAL),
        NONE,
        Gates(known_refusals=frozenset({REFUSAL})),
        [ClearRefusal],
        False,
        id="an-admitted-document-lifts-its-refusal",
    ),
    pytest.param(
        spec(start_pattern="Done"),
        ready(D, state=RuntimeState.OFFLINE),
        Actual(main=main(spec(start_pattern="Done")), install=None),
        Gates(console_matched=True),
        [Adopt],
        False,
        id="an-adopted-container-whose-pattern-matched-is-running",
    ),
]


@pytest.mark.parametrize(
    ("desired", "observed", "actual", "gates", "expected", "gated"), GATE_CASES
)
def test_gates(
    desired: ContainerSpec | None,
    observed: ObservedContainer | None,
    actual: Actual,
    gates: Gates,
    expected: list[type[Action]],
    gated: bool,
) -> None:
    result = plan(
        desired=desired,
        observed=observed,
        actual=actual,
        volume_path=VOLUME,
        now=NOW,
        policy=POLICY,
        gates=gates,
    )
    assert [type(action) for action in result.actions] == expected
    assert result.gated is gated


@pytest.mark.parametrize(
    ("pattern", "matched", "starting"),
    [
        pytest.param(None, False, False, id="without-pattern-adopted-as-running"),
        pytest.param("Done", False, True, id="with-an-unmatched-pattern-adopted-as-starting"),
        pytest.param("Done", True, False, id="with-a-matched-pattern-adopted-as-running"),
    ],
)
def test_adoption_state(pattern: str | None, matched: bool, starting: bool) -> None:
    desired = spec(start_pattern=pattern)
    result = plan(
        desired=desired,
        observed=ready(desired, state=RuntimeState.OFFLINE),
        actual=Actual(main=main(desired), install=None),
        volume_path=VOLUME,
        now=NOW,
        policy=POLICY,
        gates=Gates(console_matched=matched),
    )
    assert result.actions == (Adopt(starting=starting),)


def test_a_crash_carries_its_bookkeeping() -> None:
    observed = ready(
        D, state=RuntimeState.RUNNING, crash_times=[NOW - 700, NOW - 20], crash_count=2
    )
    result = plan(
        desired=D,
        observed=observed,
        actual=Actual(main=main(D, running=False, exit_code=3, finished_at=NOW - 10), install=None),
        volume_path=VOLUME,
        now=NOW,
        policy=POLICY,
    )
    assert result.actions == (
        RecordExit(
            exit_code=3,
            reason="crashed",
            crash=Crash(
                times=(NOW - 20, NOW), count=3, gave_up=False, message="Crashed with exit code 3"
            ),
        ),
    )


def test_settling_records_the_revision_once() -> None:
    observed = ready(D, state=RuntimeState.RUNNING, container_id="c1")
    actual = Actual(main=main(D), install=None)
    patch = settle(desired=D, observed=observed, actual=actual, revision="r1")
    assert patch is not None and patch.changes() == {"revision_applied": "r1"}
    done = observed.model_copy(update={"revision_applied": "r1"})
    assert settle(desired=D, observed=done, actual=actual, revision="r1") is None
