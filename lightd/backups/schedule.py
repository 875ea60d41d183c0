"""When a container's scheduled backup is due: pure functions, the clock is a parameter.

A schedule is ``every_seconds``; the first backup is due at once, each next one
``every_seconds`` after the previous scheduled one started. After downtime that missed
several, exactly one is due (the next is then counted from it). This module must not
read the clock, records or documents.
"""

from __future__ import annotations


def next_due(last_started_at: float | None, every_seconds: float, now: float) -> float:
    """The time the next scheduled backup is due (``now`` or earlier: due now)."""
    if last_started_at is None or last_started_at > now:
        # Never ran, or the clock went back past the last run: run now.
        return now
    return last_started_at + every_seconds


def is_due(last_started_at: float | None, every_seconds: float, now: float) -> bool:
    return every_seconds > 0 and next_due(last_started_at, every_seconds, now) <= now
