"""The planner: desired + observed + actual + gates -> the actions that converge them.

A purely computational function with no side effects: no I/O, no clock (``now`` is an
argument), no asyncio, no docker. It decides everything about a container's next step:
the gates the controller computed (deletion held, admission refusal, a blocked
revision), crash bookkeeping, adoption of a running container, and what observed state
to settle once nothing is left to do. Running it again right after its actions were
applied must plan nothing. The executor applies what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightd.engine.records import Actual, ActualContainer, Resources
from lightd.reconcile.actions import (
    Action,
    Adopt,
    ApplyDiskLimit,
    ClearConflict,
    ClearRefusal,
    Crash,
    CreateMain,
    EnsureImage,
    FinishInstall,
    Forget,
    HandVolume,
    KillInstall,
    KillMain,
    Plan,
    RecordDiskOver,
    RecordEngineBack,
    RecordExit,
    RecordKillHandled,
    RecordRestartHandled,
    RemoveInstall,
    RemoveMain,
    ReportBlocked,
    ReportRefused,
    RestartMain,
    RewriteConfigs,
    SkipInstall,
    StartInstall,
    StartMain,
    StopForDisk,
    StopMain,
    UpdateLimits,
)
from lightd.spec.container import (
    ContainerSpec,
    Power,
    install_image_of,
    install_key,
    numeric_owner,
    recreate_hash,
)
from lightd.spec.observed import InstallState, ObservedContainer, ObservedPatch, RuntimeState

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
    # The user new main containers run as (containers.user); None: the image's own.
    default_user: str | None = None
    # Capabilities dropped from main containers that run as a user (containers.cap_drop).
    cap_drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gates:
    """What the controller found out before planning (the planner cannot look)."""

    held: bool = False  # the desired document is gone but the deletion guard holds it
    refusal: str | None = None  # why the host refuses the document now, if it does
    known_refusals: frozenset[str] = frozenset()  # refusals reported before
    revision: str | None = None  # the digest of the desired document now
    console_matched: bool = False  # the console reader saw the start pattern
    disk_limit: int | None = None  # the volume's disk limit now
    disk_over: str | None = None  # why the volume is past its limit, if it is


NO_GATES = Gates()


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


def crash_of(
    observed: ObservedContainer, exit_code: int | None, *, now: float, policy: Policy
) -> Crash:
    """The crash bookkeeping after one more crash at ``now``."""
    times = (*recent_crashes(observed, now=now, policy=policy), now)
    gave_up = len(times) >= policy.crash_max
    if gave_up:
        message = (
            f"Crashed {len(times)} times within {int(policy.crash_window_seconds)} s; "
            "not restarting again (start or restart it to try again)"
        )
    else:
        message = f"Crashed with exit code {exit_code}"
    return Crash(times=times, count=observed.crash_count + 1, gave_up=gave_up, message=message)


def main_user(
    desired: ContainerSpec, obs: ObservedContainer, *, volume_path: str, policy: Policy
) -> str | None:
    """The user the main container runs as.

    The document's ``user`` if it sets one; else the image's own user (None) for a
    container lightd created before it knew of users, as long as its spec is unchanged
    (an upgrade re-creates nothing); else ``containers.user``.
    """
    if desired.user is not None:
        return desired.user
    legacy = obs.spec_hash is not None and not obs.user_recorded
    if legacy and obs.spec_hash == recreate_hash(desired, volume_path=volume_path, user=None):
        return None
    return policy.default_user


def _starting(desired: ContainerSpec, start: StartMain) -> list[Action]:
    """A start, after the config files are rewritten (when the spec has any)."""
    return [RewriteConfigs(), start] if desired.config_files else [start]


def _one(action: Action) -> Plan:
    return Plan(actions=(action,))


NOTHING = Plan(actions=())
GATED = Plan(actions=(), gated=True)


def plan(
    *,
    desired: ContainerSpec | None,
    observed: ObservedContainer | None,
    actual: Actual,
    volume_path: str | None,
    now: float,
    policy: Policy,
    gates: Gates = NO_GATES,
) -> Plan:
    """What to do next for one container. Each call plans one step of convergence."""
    gated = gate(desired=desired, observed=observed, gates=gates)
    if gated is not None:
        return gated
    if desired is None:
        return _plan_delete(observed, actual)
    if observed is not None and observed.blocked_reason in gates.known_refusals:
        return _one(ClearRefusal())

    for found in (actual.main, actual.install):
        if found is not None and not found.managed:
            reason = (
                f"Conflict: a container named {found.name} exists that this lightd does not "
                "manage; lightd leaves it alone"
            )
            if observed is not None and observed.blocked_reason == reason:
                return NOTHING
            return _one(ReportBlocked(reason))

    if volume_path is None:
        reason = "Volume not found"
        if observed is not None and observed.blocked_reason == reason:
            return NOTHING
        return _one(ReportBlocked(reason))

    obs = observed or ObservedContainer(internal_id=desired.internal_id)
    if obs.blocked_reason is not None and obs.blocked_reason.startswith("Conflict"):
        return _one(ClearConflict())
    # The document's disk limit wins over the API's, and holds before anything writes.
    if desired.limits.disk is not None and desired.limits.disk != gates.disk_limit:
        return _one(ApplyDiskLimit(limit=desired.limits.disk))

    install = _plan_install(desired, obs, actual, now=now, policy=policy)
    if install is not None:
        return install
    if obs.install_state is InstallState.FAILED:
        if actual.main is not None and actual.main.running:
            return _one(KillMain("install failed"))
        return NOTHING
    return _plan_main(
        desired, obs, actual, volume_path=volume_path, now=now, policy=policy, gates=gates
    )


def gate(
    *, desired: ContainerSpec | None, observed: ObservedContainer | None, gates: Gates
) -> Plan | None:
    """The plan when a gate stops planning (the engine need not be looked at), else None."""
    if desired is None:
        # The deletion guard holds it, or its document exists but is invalid.
        return GATED if gates.held else None
    if (
        observed is not None
        and observed.blocked_revision is not None
        and observed.blocked_revision == gates.revision
    ):
        return GATED
    if gates.refusal is not None:
        # A hand-edited document may name ports the pool does not give it: the
        # container stays as it is until the document or the pool changes.
        if observed is None or observed.blocked_reason != gates.refusal:
            return Plan(actions=(ReportRefused(gates.refusal),), gated=True)
        return GATED
    return None


def settle(
    *,
    desired: ContainerSpec | None,
    observed: ObservedContainer | None,
    actual: Actual,
    revision: str | None,
) -> ObservedPatch | None:
    """What to record once a pass plans nothing: the revision applied, blocks lifted."""
    if observed is None or desired is None:
        return None
    main = actual.main
    patch = ObservedPatch()
    if observed.revision_applied != revision:
        patch = patch.then(ObservedPatch(revision_applied=revision))
    if observed.blocked_revision is not None:
        patch = patch.then(ObservedPatch(blocked_revision=None, blocked_reason=None))
    if main is not None and observed.container_id != main.id:
        patch = patch.then(ObservedPatch(container_id=main.id))
    return None if patch.empty else patch


def _plan_delete(observed: ObservedContainer | None, actual: Actual) -> Plan:
    if actual.install is not None and actual.install.managed:
        return _one(RemoveInstall("container deleted"))
    if actual.main is not None and actual.main.managed:
        return _one(RemoveMain("container deleted"))
    if observed is not None:
        return _one(Forget())
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
        obs.install_state is InstallState.FAILED and obs.install_image != install_image_of(desired)
    )
    if current and obs.install_state is not InstallState.INSTALLING:
        if actual.install is not None:
            return _one(RemoveInstall("leftover install container"))
        return None

    installer = actual.install
    if installer is not None:
        if not current:
            return _one(RemoveInstall("install superseded"))
        if installer.running:
            started = obs.install_started_at or installer.started_at or now
            deadline = started + policy.install_timeout_seconds
            if now >= deadline:
                return _one(KillInstall())
            return Plan(actions=(), requeue_after=max(deadline - now, 0.5))
        if installer.status == "created":
            # lightd stopped between creating and starting it: it never ran, and the
            # engine reports exit code 0 for it. Remove it; the next pass runs it again.
            return _one(RemoveInstall("install container never started"))
        return _one(FinishInstall(exit_code=installer.exit_code))

    if actual.main is not None and actual.main.running:
        return _one(StopMain("stopping for install"))
    if not desired.install_script:
        return _one(SkipInstall(install_key=key))
    # Our install container vanished before we saw it finish (lightd or the engine went
    # away): run it again.
    lost = current and obs.install_started_at is not None
    return Plan(
        actions=(
            EnsureImage(phase="install", reason="install"),
            StartInstall(install_key=key, reason="install container lost" if lost else "install"),
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
    gates: Gates,
) -> Plan:
    user = main_user(desired, obs, volume_path=volume_path, policy=policy)
    expected = recreate_hash(desired, volume_path=volume_path, user=user)
    main = actual.main
    if user is not None and numeric_owner(user) is not None and obs.volume_owner != user:
        # Installs run as root: the volume is walked once, then recorded as handed over.
        return _one(HandVolume(owner=user))
    restart_pending = (
        desired.restart_requested_at is not None
        and desired.restart_requested_at != obs.restart_handled
    )
    if main is None:
        create: list[Action] = [
            EnsureImage(phase="create", reason="create"),
            CreateMain(spec_hash=expected, user=user),
        ]
        if desired.power is Power.RUNNING and not obs.gave_up and gates.disk_over is None:
            # Start what was just created in the same step (one look at the engine less).
            handled = desired.restart_requested_at if restart_pending else None
            create += _starting(desired, StartMain("created", restart_handled=handled))
        return Plan(actions=tuple(create))
    if main.spec_hash != expected:
        return _one(RemoveMain("spec changed: re-create"))

    actions: list[Action] = []
    if limits_differ(desired, main):
        actions.append(UpdateLimits())

    if desired.power is Power.STOPPED:
        kill_pending = (
            desired.kill_requested_at is not None and desired.kill_requested_at != obs.kill_handled
        )
        if main.running:
            if kill_pending:
                actions.append(KillMain("kill requested", kill_handled=desired.kill_requested_at))
            else:
                actions.append(StopMain("power stopped"))
        elif kill_pending:
            assert desired.kill_requested_at is not None
            actions.append(RecordKillHandled(kill_handled=desired.kill_requested_at))
        elif obs.state is not RuntimeState.OFFLINE or not obs.engine_available:
            actions.append(RecordExit(exit_code=main.exit_code, reason="stopped"))
        if restart_pending:
            assert desired.restart_requested_at is not None
            actions.append(RecordRestartHandled(restart_handled=desired.restart_requested_at))
        return Plan(actions=tuple(actions))

    if gates.disk_over is not None:
        # Past its disk limit (the soft backend cannot refuse the container's writes):
        # stopped, and not started again until the volume is back within its limit.
        if main.running:
            actions.append(StopForDisk(gates.disk_over))
        elif obs.last_error != gates.disk_over:
            actions.append(RecordDiskOver(gates.disk_over))
        return Plan(actions=tuple(actions))

    if main.running:
        if restart_pending:
            assert desired.restart_requested_at is not None
            actions.append(
                RestartMain(
                    restart_handled=desired.restart_requested_at,
                    rewrite_configs=bool(desired.config_files),
                )
            )
        elif obs.state in (RuntimeState.OFFLINE, RuntimeState.STOPPING):
            starting = bool(desired.start_pattern) and not gates.console_matched
            actions.append(Adopt(starting=starting))
        elif not obs.engine_available:
            actions.append(RecordEngineBack())
        return Plan(actions=tuple(actions))

    # Desired running, actually not running.
    if obs.state in (RuntimeState.STARTING, RuntimeState.RUNNING, RuntimeState.STOPPING):
        unasked = not obs.stop_requested and obs.engine_available
        if unasked:
            finished = main.finished_at or now
            if now - finished < policy.crash_grace_seconds:
                # Wait a moment: if the engine itself is going down this is no crash.
                return Plan(actions=tuple(actions), requeue_after=policy.crash_grace_seconds)
            crash = crash_of(obs, main.exit_code, now=now, policy=policy)
            actions.append(RecordExit(exit_code=main.exit_code, reason="crashed", crash=crash))
        else:
            actions.append(RecordExit(exit_code=main.exit_code, reason="exited"))
        return Plan(actions=tuple(actions))

    if restart_pending:
        actions += _starting(
            desired, StartMain("restart requested", restart_handled=desired.restart_requested_at)
        )
        return Plan(actions=tuple(actions))
    if obs.gave_up:
        return Plan(actions=tuple(actions))
    crashes = recent_crashes(obs, now=now, policy=policy)
    if crashes:
        wait_until = max(crashes) + crash_delay(len(crashes), policy)
        if now < wait_until:
            return Plan(actions=tuple(actions), requeue_after=wait_until - now)
        actions += _starting(desired, StartMain("restart after crash"))
    else:
        actions += _starting(desired, StartMain("power running"))
    return Plan(actions=tuple(actions))
