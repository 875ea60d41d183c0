"""The commit step of a transfer (protocol 2): exactly one node ends up owning the server.

After the publishing pass (``only``, or ``final`` after a live ``first``) the target
holds a verified, started copy and answers *ready* (phase :data:`AWAITING`); it keeps
the copy only once the source commits. The source records :data:`COMMITTING` before it
sends the commit, so from then on it never starts its own container again unless the
target says it did not take the commit. Both small requests go to the target's ``POST
/transfers`` with ``X-Lightd-Transfer-Pass: commit`` or ``abort`` and
``X-Lightd-Transfer-Id``, authenticated by the commit secret the source chose (the
manifest carries its SHA-256), and are idempotent: they answer the target's record of
the transfer, whose ``state`` is the outcome (``completed``: committed; ``failed`` or
``cancelled``: the target removed its copy or is removing it), or 404 when the target
never heard of the transfer (it holds nothing of it).

This module holds the wire names, the source's requests (:class:`CommitLink`) and the
bounded retry that settles an outcome (:func:`settle`), and the target's commit windows
(:class:`CommitWindows`). It must not touch volumes, containers or records.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lightd.errors import TransferNotFound

if TYPE_CHECKING:
    pass

PROTOCOL = 2
PROTOCOL_HEADER = "X-Lightd-Transfer-Protocol"
COMMIT_SECONDS_HEADER = "X-Lightd-Commit-Seconds"
TRANSFER_ID_HEADER = "X-Lightd-Transfer-Id"
VENDOR = "application/vnd.pkglatv1+json"
AWAITING = "awaiting commit"
COMMITTING = "committing"
ABORTED = "Transfer aborted by the source"
REQUEST_SECONDS = 10.0
ABORT_SECONDS = 15.0
FIRST_DELAY = 0.5
MAX_DELAY = 5.0
Kind = Literal["commit", "abort"]


class Verdict(enum.Enum):
    COMMITTED = "committed"
    NOT_COMMITTED = "not committed"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    detail: str  # what the target said, for the record's error


class Undecided(Exception):
    """The target gave no outcome this time (unreachable, an error, not settled yet)."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(secret_hash(secret), expected)


class CommitLink:
    """The source's ``commit`` and ``abort`` requests for one transfer."""

    def __init__(self, target_url: str, transfer_id: str, internal_id: str, secret: str) -> None:
        self.url = f"{target_url.rstrip('/')}/transfers"
        self.transfer_id = transfer_id
        self.internal_id = internal_id
        self.secret = secret

    async def ask(self, kind: Kind) -> Outcome:
        """The target's outcome after ``kind``; :class:`Undecided` when it gave none."""
        import httpx

        headers = {
            "Authorization": f"Bearer {self.secret}",
            "Accept": VENDOR,
            "X-Lightd-Internal-Id": self.internal_id,
            "X-Lightd-Transfer-Pass": kind,
            TRANSFER_ID_HEADER: self.transfer_id,
        }
        try:
            async with httpx.AsyncClient(
                trust_env=False, timeout=httpx.Timeout(REQUEST_SECONDS)
            ) as client:
                answer = await client.post(self.url, content=b"", headers=headers)
                body = answer.json() if answer.content else {}
        except (httpx.HTTPError, ValueError) as exc:
            raise Undecided(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise Undecided(f"answer {answer.status_code}")
        if answer.status_code == 404 and body.get("error") == TransferNotFound.message:
            return Outcome(Verdict.NOT_COMMITTED, "the target does not know the transfer")
        if answer.status_code != 200:
            raise Undecided(f"answer {answer.status_code}: {body.get('error')}")
        state = body.get("state")
        if state == "completed":
            return Outcome(Verdict.COMMITTED, "committed")
        if state in ("failed", "cancelled"):
            return Outcome(Verdict.NOT_COMMITTED, str(body.get("error") or state))
        raise Undecided(f"the target's transfer is still {state} ({body.get('phase')})")


async def settle(ask: Callable[[], Awaitable[Outcome]], seconds: float) -> Outcome | None:
    """``ask`` again (backing off from 0.5 s to 5 s) until it gives an outcome, for at most
    ``seconds``; None when it never did."""
    deadline = time.monotonic() + seconds
    delay = FIRST_DELAY
    while True:
        with contextlib.suppress(Undecided):
            return await ask()
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, MAX_DELAY)


class CommitWindows:
    """The target's timers: a copy not committed within its window is removed."""

    def __init__(self, seconds: Callable[[], float], expired: Callable[[str], None]) -> None:
        self.seconds = seconds
        self._expired = expired
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def open(self, transfer_id: str) -> float:
        """Start the window of ``transfer_id``; its length in seconds."""
        seconds = self.seconds()
        self.close(transfer_id)
        self._timers[transfer_id] = asyncio.get_running_loop().call_later(
            seconds, self._fire, transfer_id
        )
        return seconds

    def close(self, transfer_id: str) -> None:
        timer = self._timers.pop(transfer_id, None)
        if timer is not None:
            timer.cancel()

    def close_all(self) -> None:
        for transfer_id in list(self._timers):
            self.close(transfer_id)

    def _fire(self, transfer_id: str) -> None:
        self._timers.pop(transfer_id, None)
        self._expired(transfer_id)
