"""Plain data the planner works on: what the engine shows, and the actions to take.

Frozen dataclasses only; must not import asyncio, quart or docker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lightd.engine.records import Actual, ActualContainer, Role, container_name

__all__ = ["Action", "ActionKind", "Actual", "ActualContainer", "Plan", "Role", "container_name"]


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
