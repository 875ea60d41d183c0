"""Keep rules for scheduled backups, restic-style: pure functions, no clock, no I/O.

``keep_last`` keeps the N newest; ``keep_daily`` the newest of each of the N most recent
UTC days that have a backup; ``keep_weekly`` the same per ISO week. A backup kept by any
rule is kept; with no rule set everything is kept. Only the backups a schedule made are
ever given to these rules (manual backups are never pruned). This module must not touch
records, stores or the clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class KeepRules:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0

    @property
    def empty(self) -> bool:
        return self.keep_last <= 0 and self.keep_daily <= 0 and self.keep_weekly <= 0


@dataclass(frozen=True)
class Item:
    id: str
    created_at: float


def _day(stamp: float) -> Hashable:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).date()


def _week(stamp: float) -> Hashable:
    iso = datetime.datetime.fromtimestamp(stamp, datetime.UTC).isocalendar()
    return (iso.year, iso.week)


def _newest_per(items: Sequence[Item], bucket: Callable[[float], Hashable], count: int) -> set[str]:
    kept: set[str] = set()
    seen: set[Hashable] = set()
    for item in items:  # newest first
        if len(seen) >= count:
            break
        key = bucket(item.created_at)
        if key not in seen:
            seen.add(key)
            kept.add(item.id)
    return kept


def to_keep(items: Sequence[Item], rules: KeepRules) -> set[str]:
    """The ids the rules keep; every other one may be pruned."""
    if rules.empty:
        return {item.id for item in items}
    ordered = sorted(items, key=lambda item: (item.created_at, item.id), reverse=True)
    kept = {item.id for item in ordered[: max(rules.keep_last, 0)]}
    if rules.keep_daily > 0:
        kept |= _newest_per(ordered, _day, rules.keep_daily)
    if rules.keep_weekly > 0:
        kept |= _newest_per(ordered, _week, rules.keep_weekly)
    return kept


def to_prune(items: Sequence[Item], rules: KeepRules) -> list[str]:
    kept = to_keep(items, rules)
    return [item.id for item in items if item.id not in kept]
