"""Activity of SFTP sessions, batched: bursts of the same event merge into one.

An event is a login (success or failure), an upload, a deletion or a rename. Events
with the same key (container, user, address, action, path, target) that arrive while
one is pending merge into it (``count`` grows, ``at`` is the last time); a pending
event is due once nothing merged into it for ``quiet`` seconds, or ``max_delay``
seconds after it began, so a client rewriting one file a hundred times makes one
event. Pure: the time is an argument; the service flushes due events to its callback.
It must not do I/O or import asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["sftp.login", "sftp.login_failed", "sftp.upload", "sftp.delete", "sftp.rename"]

QUIET_SECONDS = 1.0
MAX_DELAY_SECONDS = 10.0
MAX_PENDING = 10_000

Key = tuple[str, str, str, str, str, str]


@dataclass
class Pending:
    container: str
    action: Action
    user: str
    address: str
    path: str
    target: str
    first_at: float
    last_at: float
    count: int = 1

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event": "activity",
            "server": self.container,
            "activity": self.action,
            "user": self.user,
            "ip": self.address,
            "count": self.count,
            "at": round(self.last_at, 3),
        }
        if self.path:
            body["path"] = self.path
        if self.target:
            body["to"] = self.target
        return body


@dataclass
class ActivityBatch:
    quiet: float = QUIET_SECONDS
    max_delay: float = MAX_DELAY_SECONDS
    max_pending: int = MAX_PENDING
    _pending: dict[Key, Pending] = field(default_factory=dict)
    dropped: int = 0

    def add(
        self,
        *,
        container: str,
        action: Action,
        user: str,
        address: str,
        now: float,
        path: str = "",
        target: str = "",
    ) -> None:
        key: Key = (container, user, address, action, path, target)
        found = self._pending.get(key)
        if found is not None:
            found.count += 1
            found.last_at = now
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending[key] = Pending(
            container=container,
            action=action,
            user=user,
            address=address,
            path=path,
            target=target,
            first_at=now,
            last_at=now,
        )

    def due(self, now: float, *, everything: bool = False) -> list[Pending]:
        """Take the events that are ready (all of them with ``everything``), oldest first."""
        ready = [
            (key, item)
            for key, item in self._pending.items()
            if everything
            or now - item.last_at >= self.quiet
            or now - item.first_at >= self.max_delay
        ]
        for key, _item in ready:
            del self._pending[key]
        return sorted((item for _key, item in ready), key=lambda item: item.first_at)

    def __len__(self) -> int:
        return len(self._pending)
