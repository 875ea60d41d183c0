"""Observed state of a container (``<data_dir>/state/containers/<id>.json``).

Only the reconciler writes it (through typed :class:`ObservedPatch` values applied by
``lightd.store.observed``); desired files never hold status. Runtime state moves are
checked against :data:`RUNTIME_MOVES`: an illegal move raises
:class:`~lightd.errors.IllegalTransition` naming the expected and the actual state.
Pure data: must not import asyncio, quart or docker.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum, StrEnum
from typing import Any, Final

from pydantic import BaseModel, Field

from lightd.errors import IllegalTransition


class InstallState(StrEnum):
    INSTALLING = "installing"
    READY = "ready"
    FAILED = "failed"


class RuntimeState(StrEnum):
    OFFLINE = "offline"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class ObservedContainer(BaseModel):
    internal_id: str
    container_id: str | None = None
    install_state: InstallState = InstallState.INSTALLING
    install_key: str | None = None  # the install that install_state describes
    install_started_at: float | None = None
    install_image: str | None = None
    install_exit_code: int | None = None
    install_output_tail: str | None = None
    state: RuntimeState = RuntimeState.OFFLINE
    spec_hash: str | None = None
    last_error: str | None = None
    blocked_reason: str | None = None  # invalid spec or conflict: waits for a change
    blocked_revision: str | None = None  # the desired revision that was blocked
    exit_code: int | None = None
    crash_count: int = 0
    crash_times: list[float] = Field(default_factory=list)
    gave_up: bool = False
    stop_requested: bool = False
    restart_handled: float | None = None
    kill_handled: float | None = None
    started_at: float | None = None
    engine_available: bool = True
    revision_applied: str | None = None
    # The user the main container was created as (None: the image's own user) and whether
    # lightd recorded it at all: containers created before users were known did not.
    run_user: str | None = None
    user_recorded: bool = False
    # The uid:gid the volume was handed to after its last install (walked once, then never).
    volume_owner: str | None = None
    # Why a config file could not be rewritten before the last start (the file was left).
    config_error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


_R = RuntimeState
# Where the runtime state may go from each state. Offline is always reachable (an exit,
# a failed start, a removal); starting comes only from offline, or when lightd adopts a
# container it saw stopping; a running container is never "starting" again without
# going offline first.
RUNTIME_MOVES: Final[dict[RuntimeState, frozenset[RuntimeState]]] = {
    _R.OFFLINE: frozenset({_R.OFFLINE, _R.STARTING, _R.RUNNING, _R.STOPPING}),
    _R.STARTING: frozenset({_R.STARTING, _R.RUNNING, _R.STOPPING, _R.OFFLINE}),
    _R.RUNNING: frozenset({_R.RUNNING, _R.STOPPING, _R.OFFLINE}),
    _R.STOPPING: frozenset({_R.STOPPING, _R.OFFLINE, _R.STARTING, _R.RUNNING}),
}


def check_move(current: RuntimeState, target: RuntimeState) -> None:
    """Raise :class:`IllegalTransition` unless ``current`` may move to ``target``."""
    if target not in RUNTIME_MOVES[current]:
        expected = tuple(state for state, moves in RUNTIME_MOVES.items() if target in moves)
        raise IllegalTransition(
            field="state",
            target=target.value,
            expected=tuple(s.value for s in expected),
            actual=current.value,
        )


class Unset(Enum):
    """A patch field that is not part of the patch (``None`` is a value to set)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedPatch:
    """A typed change of one container's observed state: only the fields set change.

    ``expect`` states which runtime states the change was decided in; applying it in
    another one raises :class:`IllegalTransition` (a race lost, e.g. a start pattern
    matching after the container was stopped).
    """

    container_id: str | Unset | None = UNSET
    install_state: InstallState | Unset = UNSET
    install_key: str | Unset | None = UNSET
    install_started_at: float | Unset | None = UNSET
    install_image: str | Unset | None = UNSET
    install_exit_code: int | Unset | None = UNSET
    install_output_tail: str | Unset | None = UNSET
    state: RuntimeState | Unset = UNSET
    spec_hash: str | Unset | None = UNSET
    last_error: str | Unset | None = UNSET
    blocked_reason: str | Unset | None = UNSET
    blocked_revision: str | Unset | None = UNSET
    exit_code: int | Unset | None = UNSET
    crash_count: int | Unset = UNSET
    crash_times: tuple[float, ...] | Unset = UNSET
    gave_up: bool | Unset = UNSET
    stop_requested: bool | Unset = UNSET
    restart_handled: float | Unset | None = UNSET
    kill_handled: float | Unset | None = UNSET
    started_at: float | Unset | None = UNSET
    engine_available: bool | Unset = UNSET
    revision_applied: str | Unset | None = UNSET
    run_user: str | Unset | None = UNSET
    user_recorded: bool | Unset = UNSET
    volume_owner: str | Unset | None = UNSET
    config_error: str | Unset | None = UNSET
    expect: frozenset[RuntimeState] | None = None

    def changes(self) -> dict[str, Any]:
        """The fields this patch sets, as ``ObservedContainer`` field values."""
        found: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "expect":
                continue
            value = getattr(self, item.name)
            if value is UNSET:
                continue
            found[item.name] = list(value) if isinstance(value, tuple) else value
        return found

    def then(self, later: ObservedPatch) -> ObservedPatch:
        """This patch followed by ``later`` (``later`` wins where both set a field)."""
        merged = {**self.changes(), **later.changes()}
        if "crash_times" in merged:
            merged["crash_times"] = tuple(merged["crash_times"])
        return ObservedPatch(**merged, expect=self.expect)

    @property
    def empty(self) -> bool:
        return not self.changes()


def apply_patch(current: ObservedContainer, patch: ObservedPatch) -> ObservedContainer:
    """``current`` with ``patch`` applied; checks the move and validates every field."""
    if patch.expect is not None and current.state not in patch.expect:
        raise IllegalTransition(
            field="state",
            target=patch.state.value if isinstance(patch.state, RuntimeState) else "(unchanged)",
            expected=tuple(sorted(s.value for s in patch.expect)),
            actual=current.state.value,
        )
    if isinstance(patch.state, RuntimeState):
        check_move(current.state, patch.state)
    return ObservedContainer.model_validate({**current.model_dump(), **patch.changes()})
