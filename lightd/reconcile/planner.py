"""The planner: desired + observed + actual -> the actions that converge them.

A purely computational function with no side effects: no I/O, no clock (``now`` is an
argument), no asyncio, no docker. Running it again right after its actions were applied
must plan nothing. The executor applies what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightd.engine.records import Actual, ActualContainer, Resources
from lightd.reconcile.model import Action, ActionKind, Plan
from lightd.spec.container import ContainerSpec, Power, install_key, recreate_hash
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState

DEFAULT_PIDS_LIMIT = 512


@dataclass(frozen=True)
class Policy:
    """Timing numbers of the reconciler (data, not scattered literals)."""

    install_timeout_seconds: float = 1800.0
    crash_backoff_initial_seconds: float = 10.0
    crash_backoff_max_seconds: float = 300.0
    crash_window_seconds: float = 600.0
    crash_max: int = 5
    crash_grace_seconds: float = 2.0


def resources_of(spec: ContainerSpec) -> Resources:
    """Engine figures for the spec's limits (0 means unlimited)."""
    memory = spec.limits.memory or 0
    if memory and spec.limits.swap is not None:
        swap_total = -1 if spec.limits.swap == -1 else memory + spec.limits.swap
    else:
        swap_total = memory if memory else 0
    return Resources(
        memory=memory,
        memory_swap=swap_total,
        nano_cpus=round((spec.limits.cpu or 0) * 1e9),
        pids_limit=spec.limits.pids or DEFAULT_PIDS_LIMIT,
    )


def limits_differ(spec: ContainerSpec, main: ActualContainer) -> bool:
    wanted = resources_of(spec)
    return (
        (main.memory or 0) != wanted.memory
        or (main.nano_cpus or 0) != wanted.nano_cpus
        or (main.pids_limit or 0) != wanted.pids_limit
        or (wanted.memory and (main.memory_swap or 0) != wanted.memory_swap)
    ) is True


def recent_crashes(observed: ObservedContainer, *, now: float, policy: Policy) -> list[float]:
    return [t for t in observed.crash_times if now - t <= policy.crash_window_seconds]


def crash_delay(count: int, policy: Policy) -> float:
    """Backoff before restart number ``count`` within the window (10 s doubling to 5 min)."""
    if count <= 0:
        return 0.0
    return min(
        policy.crash_backoff_initial_seconds * (2.0 ** (count - 1)),
        policy.crash_backoff_max_seconds,
    )


def _one(kind: ActionKind, reason: str = "", **detail: object) -> Plan:
    return Plan(actions=(Action(kind, reason, dict(detail)),))


NOTHING = Plan(actions=())


def plan(
    *,
    desired: ContainerSpec | None,
    observed: ObservedContainer | None,
    actual: Actual,
    volume_path: str | None,
    now: float,
    policy: Policy,
) -> Plan:
    """What to do next for one container. Each call plans one step of convergence."""
    if desired is None:
        return _plan_delete(observed, actual)

    for found in (actual.main, actual.install):
        if found is not None and not found.managed:
            reason = (
                f"Conflict: a container named {found.name} exists that this lightd does not "
                "manage; lightd leaves it alone"
            )
            if observed is not None and observed.blocked_reason == reason:
                return NOTHING
            return _one(ActionKind.REPORT_BLOCKED, reason)

    if volume_path is None:
        reason = "Volume not found"
        if observed is not None and observed.blocked_reason == reason:
            return NOTHING
        return _one(ActionKind.REPORT_BLOCKED, reason)

    obs = observed or ObservedContainer(internal_id=desired.internal_id)
    if obs.blocked_reason is not None and obs.blocked_reason.startswith("Conflict"):
        return _one(ActionKind.MARK_STATE, "conflict resolved", blocked_reason=None)

    install = _plan_install(desired, obs, actual, now=now, policy=policy)
    if install is not None:
        return install
    if obs.install_state is InstallState.FAILED:
        if actual.main is not None and actual.main.running:
            return _one(ActionKind.KILL_MAIN, "install failed")
        return NOTHING
    return _plan_main(desired, obs, actual, volume_path=volume_path, now=now, policy=policy)


def _plan_delete(observed: ObservedContainer | None, actual: Actual) -> Plan:
    if actual.install is not None and actual.install.managed:
        return _one(ActionKind.REMOVE_INSTALL, "container deleted")
    if actual.main is not None and actual.main.managed:
        return _one(ActionKind.REMOVE_MAIN, "container deleted")
    if observed is not None:
        return _one(ActionKind.FORGET, "container deleted")
    return NOTHING


def _plan_install(
    desired: ContainerSpec,
    obs: ObservedContainer,
    actual: Actual,
    *,
    now: float,
    policy: Policy,
) -> Plan | None:
    """None when the install phase is done (ready or failed for the current install)."""
    key = install_key(desired)
    current = obs.install_key == key and not (
        obs.install_state is InstallState.FAILED and obs.install_image != desired.image
    )
    if current and obs.install_state is not InstallState.INSTALLING:
        if actual.install is not None:
            return _one(ActionKind.REMOVE_INSTALL, "leftover install container")
        return None

    installer = actual.install
    if installer is not None:
        if not current:
            return _one(ActionKind.REMOVE_INSTALL, "install superseded")
        if installer.running:
            started = obs.install_started_at or installer.started_at or now
            deadline = started + policy.install_timeout_seconds
            if now >= deadline:
                return _one(ActionKind.KILL_INSTALL, "install timed out")
            return Plan(actions=(), requeue_after=max(deadline - now, 0.5))
        return _one(ActionKind.FINISH_INSTALL, "install exited", exit_code=installer.exit_code)

    if actual.main is not None and actual.main.running:
        return _one(ActionKind.STOP_MAIN, "stopping for install")
    if not desired.install_script:
        return _one(ActionKind.SKIP_INSTALL, "no install script", install_key=key)
    if current and obs.install_started_at is not None:
        # Our install container vanished before we saw it finish (lightd or the
        # engine went away): run it again.
        return Plan(
            actions=(
                Action(ActionKind.ENSURE_IMAGE, "install"),
                Action(ActionKind.START_INSTALL, "install container lost", {"install_key": key}),
            )
        )
    return Plan(
        actions=(
            Action(ActionKind.ENSURE_IMAGE, "install"),
            Action(ActionKind.START_INSTALL, "install", {"install_key": key}),
        )
    )


def _plan_main(
    desired: ContainerSpec,
    obs: ObservedContainer,
    actual: Actual,
    *,
    volume_path: str,
    now: float,
    policy: Policy,
) -> Plan:
    expected = recreate_hash(desired, volume_path=volume_path)
    main = actual.main
    if main is None:
        create = [
            Action(ActionKind.ENSURE_IMAGE, "create"),
            Action(ActionKind.CREATE_MAIN, "missing", {"spec_hash": expected}),
        ]
        if desired.power is Power.RUNNING and not obs.gave_up:
            # Start what was just created in the same step (one look at the engine less).
            detail: dict[str, object] = {}
            if (
                desired.restart_requested_at is not None
                and desired.restart_requested_at != obs.restart_handled
            ):
                detail["restart_handled"] = desired.restart_requested_at
            create.append(Action(ActionKind.START_MAIN, "created", detail))
        return Plan(actions=tuple(create))
    if main.spec_hash != expected:
        return _one(ActionKind.REMOVE_MAIN, "spec changed: re-create")

    restart_pending = (
        desired.restart_requested_at is not None
        and desired.restart_requested_at != obs.restart_handled
    )
    actions: list[Action] = []
    if limits_differ(desired, main):
        actions.append(Action(ActionKind.UPDATE_LIMITS, "limits differ"))

    if desired.power is Power.STOPPED:
        kill_pending = (
            desired.kill_requested_at is not None and desired.kill_requested_at != obs.kill_handled
        )
        if main.running:
            if kill_pending:
                actions.append(
                    Action(
                        ActionKind.KILL_MAIN,
                        "kill requested",
                        {"kill_handled": desired.kill_requested_at},
                    )
                )
            else:
                actions.append(Action(ActionKind.STOP_MAIN, "power stopped"))
        elif kill_pending:
            actions.append(
                Action(
                    ActionKind.MARK_STATE,
                    "kill while stopped",
                    {"kill_handled": desired.kill_requested_at},
                )
            )
        elif obs.state is not RuntimeState.OFFLINE or not obs.engine_available:
            actions.append(
                Action(
                    ActionKind.RECORD_EXIT, "stopped", {"crash": False, "exit_code": main.exit_code}
                )
            )
        if restart_pending:
            actions.append(
                Action(
                    ActionKind.MARK_STATE,
                    "restart while stopped",
                    {"restart_handled": desired.restart_requested_at},
                )
            )
        return Plan(actions=tuple(actions))

    if main.running:
        if restart_pending:
            actions.append(
                Action(
                    ActionKind.RESTART_MAIN,
                    "restart requested",
                    {"restart_handled": desired.restart_requested_at},
                )
            )
        elif obs.state in (RuntimeState.OFFLINE, RuntimeState.STOPPING):
            actions.append(Action(ActionKind.MARK_STATE, "running", {"state": "adopt"}))
        elif not obs.engine_available:
            actions.append(Action(ActionKind.MARK_STATE, "engine back", {"engine_available": True}))
        return Plan(actions=tuple(actions))

    # Desired running, actually not running.
    if obs.state in (RuntimeState.STARTING, RuntimeState.RUNNING, RuntimeState.STOPPING):
        unasked = not obs.stop_requested and obs.engine_available
        if unasked:
            finished = main.finished_at or now
            if now - finished < policy.crash_grace_seconds:
                # Wait a moment: if the engine itself is going down this is no crash.
                return Plan(actions=tuple(actions), requeue_after=policy.crash_grace_seconds)
            count = len(recent_crashes(obs, now=now, policy=policy)) + 1
            actions.append(
                Action(
                    ActionKind.RECORD_EXIT,
                    "crashed",
                    {
                        "crash": True,
                        "exit_code": main.exit_code,
                        "give_up": count >= policy.crash_max,
                    },
                )
            )
        else:
            actions.append(
                Action(
                    ActionKind.RECORD_EXIT, "exited", {"crash": False, "exit_code": main.exit_code}
                )
            )
        return Plan(actions=tuple(actions))

    if restart_pending:
        actions.append(
            Action(
                ActionKind.START_MAIN,
                "restart requested",
                {"restart_handled": desired.restart_requested_at},
            )
        )
        return Plan(actions=tuple(actions))
    if obs.gave_up:
        return Plan(actions=tuple(actions))
    crashes = recent_crashes(obs, now=now, policy=policy)
    if crashes:
        wait_until = max(crashes) + crash_delay(len(crashes), policy)
        if now < wait_until:
            return Plan(actions=tuple(actions), requeue_after=wait_until - now)
        actions.append(Action(ActionKind.START_MAIN, "restart after crash"))
    else:
        actions.append(Action(ActionKind.START_MAIN, "power running"))
    return Plan(actions=tuple(actions))
