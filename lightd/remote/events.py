"""What the panel is told: the notifications one observed change turns into.

Pure functions over :class:`~lightd.spec.observed.ObservedContainer` and the
:class:`Reported` record of what was last queued for the panel. Comparing with what was
*reported* (not with the previous observed value) makes the same function serve live
changes, the catch-up after a restart and the catch-up after the remote is enabled. It
must not do I/O, know about HTTP or import asyncio.

Rules:

- ``{"event": "update", "server": id, "status": s}`` when the install state becomes
  ``installing`` or ``ready``, or the runtime state becomes ``starting``, ``running``,
  ``stopping`` or ``offline``. A container's very first ``offline`` (the state of a
  container that never ran) is not sent: the panel assumes it.
- ``{"event": "update", "server": id, "error": "failed", "data": message}`` when the
  install fails, the container crashes, lightd gives up restarting it, or its
  ``last_error`` changes to a new message (an invalid spec, an engine error, ...).
- When both states change at once, a change towards ``offline``/``stopping`` is told
  before the install state (``offline`` then ``installing`` on a reinstall), any other
  after it (``ready`` then ``starting``).
- A deleted container that was not ``offline`` is told ``offline``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState

# "backup": the end of a backup or restore of the container's volume (lightd.backups);
# "activity": SFTP logins and file changes (lightd.sftp).
Kind = Literal["state", "error", "activity", "backup"]


@dataclass(frozen=True)
class Notification:
    kind: Kind
    body: dict[str, str | int | float]


@dataclass(frozen=True)
class Reported:
    """What the panel was last told (queued for it) about one container."""

    install: str | None = None
    state: str | None = None
    error: str | None = None
    crash_count: int = 0
    gave_up: bool = False


def activity(body: dict[str, str | int | float]) -> Notification:
    """An activity event (SFTP logins, uploads, ...), already batched by its producer."""
    return Notification("activity", dict(body))


def status(server: str, value: str) -> Notification:
    return Notification("state", {"event": "update", "server": server, "status": value})


def failure(server: str, message: str) -> Notification:
    return Notification(
        "error", {"event": "update", "server": server, "error": "failed", "data": message}
    )


_DOWN = {RuntimeState.OFFLINE, RuntimeState.STOPPING}


def changes(
    server: str, before: Reported | None, now: ObservedContainer | None
) -> tuple[list[Notification], Reported | None]:
    """The notifications that bring the panel from ``before`` to ``now``, and the new record."""
    if now is None:
        if before is not None and before.state not in (None, RuntimeState.OFFLINE.value):
            return [status(server, RuntimeState.OFFLINE.value)], None
        return [], None
    prev = before or Reported()
    install: list[Notification] = []
    runtime: list[Notification] = []
    errors: list[Notification] = []
    error = prev.error
    if now.install_state.value != prev.install:
        if now.install_state is InstallState.FAILED:
            error = now.last_error or "Install failed"
            errors.append(failure(server, error))
        else:
            install.append(status(server, now.install_state.value))
    if now.state.value != prev.state and not (
        prev.state is None and now.state is RuntimeState.OFFLINE
    ):
        runtime.append(status(server, now.state.value))
    if now.last_error is None:
        error = None
    elif not errors and (
        now.last_error != prev.error
        or now.crash_count > prev.crash_count
        or (now.gave_up and not prev.gave_up)
    ):
        error = now.last_error
        errors.append(failure(server, now.last_error))
    ordered = runtime + install if now.state in _DOWN else install + runtime
    record = replace(
        prev,
        install=now.install_state.value,
        state=now.state.value,
        error=error,
        crash_count=now.crash_count,
        gave_up=now.gave_up,
    )
    return ordered + errors, record
