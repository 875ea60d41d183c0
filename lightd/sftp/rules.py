"""Pure rules of the SFTP server: lockouts, permissions, usernames, session caps.

Everything here takes the time as an argument and keeps its state in plain objects, so
it is table-tested without a clock or a socket. It must not do I/O, log or import
asyncio or asyncssh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Permission = Literal["read", "write", "delete"]
PERMISSIONS: tuple[Permission, ...] = ("read", "write", "delete")

# Three failures of one (username, address) within 60 s lock the pair out for 60 s.
LOCKOUT_FAILURES = 3
LOCKOUT_WINDOW_SECONDS = 60.0
LOCKOUT_SECONDS = 60.0
# Authentication attempts (passwords and offered keys) one connection may make.
MAX_TRIES_PER_CONNECTION = 6

# The container internal_id's own shape (the default username is the internal_id).
USERNAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


def username_problem(username: str) -> str | None:
    """Why ``username`` cannot be an SFTP username, or None."""
    if not USERNAME_RE.fullmatch(username):
        return "must be 1 to 64 characters: letters, digits, '.', '_' or '-', not starting with '.'"
    return None


def permissions_problem(permissions: Iterable[str]) -> str | None:
    """Why ``permissions`` is not a subset of read, write, delete, or None."""
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown:
        return f"unknown permission {', '.join(unknown)} (allowed: read, write, delete)"
    return None


def normalized_permissions(permissions: Iterable[str]) -> list[Permission]:
    wanted = set(permissions)
    return [p for p in PERMISSIONS if p in wanted]


@dataclass
class _Pair:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


@dataclass
class Lockouts:
    """Failed authentications per (username, address); a pair with too many is locked."""

    failures: int = LOCKOUT_FAILURES
    window: float = LOCKOUT_WINDOW_SECONDS
    duration: float = LOCKOUT_SECONDS
    _pairs: dict[tuple[str, str], _Pair] = field(default_factory=dict)
    # Lockouts since start (for /metrics).
    count: int = 0

    def locked(self, username: str, address: str, now: float) -> bool:
        pair = self._pairs.get((username, address))
        return pair is not None and now < pair.locked_until

    def fail(self, username: str, address: str, now: float) -> bool:
        """Record a failure; True when this failure locks the pair out (just now)."""
        pair = self._pairs.setdefault((username, address), _Pair())
        if now < pair.locked_until:
            return False
        pair.failures = [t for t in pair.failures if now - t < self.window]
        pair.failures.append(now)
        if len(pair.failures) >= self.failures:
            pair.failures.clear()
            pair.locked_until = now + self.duration
            self.count += 1
            return True
        return False

    def succeed(self, username: str, address: str) -> None:
        self._pairs.pop((username, address), None)

    def prune(self, now: float) -> None:
        """Forget pairs with nothing recent (bounded memory under a flood)."""
        stale = [
            key
            for key, pair in self._pairs.items()
            if now >= pair.locked_until and all(now - t >= self.window for t in pair.failures)
        ]
        for key in stale:
            del self._pairs[key]

    def __len__(self) -> int:
        return len(self._pairs)


def session_refusal(
    *, container_sessions: int, node_sessions: int, per_container: int, node_cap: int
) -> str | None:
    """Why one more session may not open, or None."""
    if node_sessions >= node_cap:
        return "Too many SFTP sessions on this node"
    if container_sessions >= per_container:
        return "Too many SFTP sessions for this container"
    return None


Operation = Literal[
    "read",  # open for reading, list a folder, read a link
    "write",  # open for writing, mkdir, setstat, symlink, rename
    "delete",  # remove, rmdir, and replacing an existing target by a rename
]


def allowed(permissions: Iterable[str], needed: Iterable[Operation]) -> bool:
    held = set(permissions)
    return all(item in held for item in needed)


def open_needs(*, reading: bool, writing: bool) -> list[Operation]:
    needs: list[Operation] = []
    if reading:
        needs.append("read")
    if writing:
        needs.append("write")
    return needs
