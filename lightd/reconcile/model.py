"""Plain data the planner works on: what the engine shows, and the actions to take.

Frozen dataclasses only; must not import asyncio, quart or docker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

LABEL_MANAGED = "io.lightd.managed"
LABEL_INTERNAL_ID = "io.lightd.internal_id"
LABEL_ROLE = "io.lightd.role"
LABEL_SPEC_HASH = "io.lightd.spec_hash"
# Which lightd owns a container: several daemons may share one engine.
LABEL_NODE = "io.lightd.node"


class Role(StrEnum):
    MAIN = "main"
    INSTALL = "install"


def container_name(internal_id: str, role: Role) -> str:
    return f"lightd-{internal_id}" if role is Role.MAIN else f"lightd-{internal_id}-install"


@dataclass(frozen=True)
class ActualContainer:
    """One Docker container as the engine reports it."""

    id: str
    name: str
    managed: bool  # carries lightd's labels and this node's id
    internal_id: str | None
    role: str | None
    spec_hash: str | None
    running: bool
    status: str
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    memory: int | None
    memory_swap: int | None
    nano_cpus: int | None
    pids_limit: int | None
    oom_killed: bool = False


@dataclass(frozen=True)
class Actual:
    main: ActualContainer | None
    install: ActualContainer | None


class ActionKind(StrEnum):
    ENSURE_IMAGE = "ensure_image"
    START_INSTALL = "start_install"
    FINISH_INSTALL = "finish_install"
    KILL_INSTALL = "kill_install"
    REMOVE_INSTALL = "remove_install"
    SKIP_INSTALL = "skip_install"
    CREATE_MAIN = "create_main"
    REMOVE_MAIN = "remove_main"
    START_MAIN = "start_main"
    STOP_MAIN = "stop_main"
    KILL_MAIN = "kill_main"
    RESTART_MAIN = "restart_main"
    UPDATE_LIMITS = "update_limits"
    RECORD_EXIT = "record_exit"
    MARK_STATE = "mark_state"
    REPORT_BLOCKED = "report_blocked"
    FORGET = "forget"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str = ""
    detail: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind.value}({self.reason})" if self.reason else self.kind.value


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    requeue_after: float | None = None  # look again after this many seconds

    @property
    def empty(self) -> bool:
        return not self.actions
