"""The actions a plan is made of: one frozen dataclass per kind, with its own fields.

``engine_changing`` says whether the engine looks different after the action (the
controller then looks again in a later pass); ``kind`` is the stable name used in logs
and metrics. Plain data only: it must not import asyncio, quart or docker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal


@dataclass(frozen=True, slots=True)
class EnsureImage:
    """The spec's image must be on the engine (pulled if missing)."""

    phase: Literal["install", "create"]
    reason: str = ""
    kind: ClassVar[str] = "ensure_image"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StartInstall:
    install_key: str
    reason: str = "install"
    kind: ClassVar[str] = "start_install"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class FinishInstall:
    """The install container exited: keep its log, remove it, record the result."""

    exit_code: int | None
    reason: str = "install exited"
    kind: ClassVar[str] = "finish_install"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class KillInstall:
    reason: str = "install timed out"
    kind: ClassVar[str] = "kill_install"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RemoveInstall:
    reason: str = ""
    kind: ClassVar[str] = "remove_install"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SkipInstall:
    """No install script: the install of ``install_key`` counts as done."""

    install_key: str
    reason: str = "no install script"
    kind: ClassVar[str] = "skip_install"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class CreateMain:
    """Create the main container; ``user`` None keeps the image's user (older containers)."""

    spec_hash: str
    user: str | None = None
    reason: str = "missing"
    kind: ClassVar[str] = "create_main"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RewriteConfigs:
    """Rewrite the spec's config files in the volume (before a start)."""

    reason: str = "before start"
    kind: ClassVar[str] = "rewrite_configs"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class HandVolume:
    """Hand the volume to the container's user once, after an install (``uid:gid``)."""

    owner: str
    reason: str = "after install"
    kind: ClassVar[str] = "hand_volume"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RemoveMain:
    reason: str = ""
    kind: ClassVar[str] = "remove_main"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StartMain:
    """Start the main container; ``restart_handled`` marks a restart request as done."""

    reason: str = ""
    restart_handled: float | None = None
    kind: ClassVar[str] = "start_main"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StopMain:
    """Stop gracefully (the spec's stop command or signal, then a kill after its timeout)."""

    reason: str = ""
    kind: ClassVar[str] = "stop_main"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class KillMain:
    reason: str = ""
    kill_handled: float | None = None
    kind: ClassVar[str] = "kill_main"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RestartMain:
    """Stop, then start again; ``rewrite_configs`` rewrites the config files in between."""

    restart_handled: float
    rewrite_configs: bool = False
    reason: str = "restart requested"
    kind: ClassVar[str] = "restart_main"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class UpdateLimits:
    reason: str = "limits differ"
    kind: ClassVar[str] = "update_limits"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ApplyDiskLimit:
    """The document's ``limits.disk`` differs from the volume's limit: apply it."""

    limit: int
    reason: str = "disk limit differs"
    kind: ClassVar[str] = "apply_disk_limit"
    engine_changing: ClassVar[bool] = True  # the volume changed: look again


@dataclass(frozen=True, slots=True)
class StopForDisk:
    """The volume is past its limit (soft backend): stop the container, say why."""

    message: str
    reason: str = "disk limit exceeded"
    kind: ClassVar[str] = "stop_for_disk"
    engine_changing: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RecordDiskOver:
    """Stopped and still past the limit: not started again; ``last_error`` says why."""

    message: str
    reason: str = "disk limit exceeded"
    kind: ClassVar[str] = "mark_state"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Crash:
    """The crash bookkeeping after one more crash (computed by the planner)."""

    times: tuple[float, ...]
    count: int
    gave_up: bool
    message: str


@dataclass(frozen=True, slots=True)
class RecordExit:
    """The main container is not running: record that (and a crash, if it was one)."""

    exit_code: int | None
    reason: str = ""
    crash: Crash | None = None
    kind: ClassVar[str] = "record_exit"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Adopt:
    """A running main container lightd saw as not running: running, or starting until its
    start pattern matches."""

    starting: bool
    reason: str = "running"
    kind: ClassVar[str] = "mark_state"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RecordEngineBack:
    reason: str = "engine back"
    kind: ClassVar[str] = "mark_state"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ClearConflict:
    reason: str = "conflict resolved"
    kind: ClassVar[str] = "mark_state"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RecordKillHandled:
    """A kill request while already stopped: nothing to kill, mark it handled."""

    kill_handled: float
    reason: str = "kill while stopped"
    kind: ClassVar[str] = "mark_state"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RecordRestartHandled:
    """A restart request while power is stopped: nothing to restart, mark it handled."""

    restart_handled: float
    reason: str = "restart while stopped"
    kind: ClassVar[str] = "mark_state"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ReportBlocked:
    """A conflict or a missing volume: report it and wait for a change."""

    reason: str
    kind: ClassVar[str] = "report_blocked"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ReportRefused:
    """The host refuses the document (admission): report it, change nothing."""

    reason: str
    kind: ClassVar[str] = "report_refused"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ClearRefusal:
    reason: str = "admitted again"
    kind: ClassVar[str] = "clear_refusal"
    engine_changing: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Forget:
    reason: str = "container deleted"
    kind: ClassVar[str] = "forget"
    engine_changing: ClassVar[bool] = True


Action = (
    EnsureImage
    | StartInstall
    | FinishInstall
    | KillInstall
    | RemoveInstall
    | SkipInstall
    | CreateMain
    | HandVolume
    | RewriteConfigs
    | RemoveMain
    | StartMain
    | StopMain
    | KillMain
    | RestartMain
    | UpdateLimits
    | ApplyDiskLimit
    | StopForDisk
    | RecordDiskOver
    | RecordExit
    | Adopt
    | RecordEngineBack
    | ClearConflict
    | RecordKillHandled
    | RecordRestartHandled
    | ReportBlocked
    | ReportRefused
    | ClearRefusal
    | Forget
)


def describe(action: Action) -> str:
    """``kind(reason)`` for logs."""
    return f"{action.kind}({action.reason})" if action.reason else action.kind


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    requeue_after: float | None = None  # look again after this many seconds
    # A gate (deletion held, blocked revision, admission refused) stopped planning: apply
    # the actions, then neither settle nor look again.
    gated: bool = False

    @property
    def empty(self) -> bool:
        return not self.actions
