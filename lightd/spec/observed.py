"""Observed state of a container (``<data_dir>/state/containers/<id>.json``).

Only the reconciler and the runtime watchers write it; desired files never hold status.
Pure data: must not import asyncio, quart or docker.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


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
    created_at: float = 0.0
    updated_at: float = 0.0
