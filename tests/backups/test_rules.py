"""Pure rules: keep rules (hypothesis over generated schedules), due times, the throttle."""

from __future__ import annotations

import datetime
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightd.backups.retention import Item, KeepRules, to_keep, to_prune
from lightd.backups.schedule import is_due, next_due
from lightd.backups.service import Throttle

DAY = 86400.0
START = 1_700_000_000.0


@st.composite
def schedules(draw: st.DrawFn) -> list[Item]:
    """Backups every ``every`` seconds from START, some of them missing (downtime)."""
    every = draw(st.sampled_from([600.0, 3600.0, 6 * 3600.0, DAY, 3 * DAY]))
    count = draw(st.integers(min_value=0, max_value=120))
    kept = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    jitter = draw(st.floats(min_value=0, max_value=59))
    return [
        Item(f"b{index:04d}", START + index * every + jitter)
        for index, present in enumerate(kept)
        if present
    ]


rules_strategy = st.builds(
    KeepRules,
    keep_last=st.integers(0, 10),
    keep_daily=st.integers(0, 10),
    keep_weekly=st.integers(0, 6),
)


def day(item: Item) -> datetime.date:
    return datetime.datetime.fromtimestamp(item.created_at, datetime.UTC).date()


@given(schedules(), rules_strategy)
@settings(max_examples=300, deadline=None)
def test_keep_rules(items: list[Item], rules: KeepRules) -> None:
    kept = to_keep(items, rules)
    ids = {item.id for item in items}
    assert kept <= ids
    assert set(to_prune(items, rules)) == ids - kept
    newest = sorted(items, key=lambda i: i.created_at, reverse=True)
    if rules.empty:
        assert kept == ids
        return
    # keep_last: the N newest.
    assert {item.id for item in newest[: rules.keep_last]} <= kept
    # keep_daily: the newest of each of the N most recent days with a backup.
    days: list[datetime.date] = []
    for item in newest:
        if day(item) not in days:
            days.append(day(item))
    for wanted in days[: rules.keep_daily]:
        assert next(i for i in newest if day(i) == wanted).id in kept
    # Never more than the rules allow, and the newest always stays.
    assert len(kept) <= rules.keep_last + rules.keep_daily + rules.keep_weekly
    if items:
        assert newest[0].id in kept
    # Order of the input does not matter.
    shuffled = list(items)
    random.Random(1).shuffle(shuffled)
    assert to_keep(shuffled, rules) == kept


@given(schedules(), rules_strategy, st.sampled_from(["keep_last", "keep_daily", "keep_weekly"]))
@settings(max_examples=200, deadline=None)
def test_more_generous_rules_keep_a_superset(
    items: list[Item], rules: KeepRules, which: str
) -> None:
    if rules.empty:
        return
    looser = KeepRules(**{**rules.__dict__, which: getattr(rules, which) + 1})
    assert to_keep(items, rules) <= to_keep(items, looser)


def test_keep_table() -> None:
    midnight = 1_699_920_000.0  # 2023-11-14 00:00 UTC
    items = [Item(f"d{d}h{h}", midnight + d * DAY + h * 3600) for d in range(10) for h in (0, 12)]
    assert to_keep(items, KeepRules(keep_last=3)) == {"d9h12", "d9h0", "d8h12"}
    assert to_keep(items, KeepRules(keep_daily=2)) == {"d9h12", "d8h12"}
    assert to_keep(items, KeepRules(keep_last=1, keep_daily=3)) == {"d9h12", "d8h12", "d7h12"}
    weekly = to_keep(items, KeepRules(keep_weekly=2))
    assert "d9h12" in weekly and len(weekly) == 2
    assert to_keep([], KeepRules(keep_last=5)) == set()


def test_schedule_due() -> None:
    assert next_due(None, 3600, START) == START  # never ran: now
    assert not is_due(START, 3600, START + 10)
    assert is_due(START, 3600, START + 3600)
    # After downtime that missed many: due once; the next counts from the new one.
    assert is_due(START, 3600, START + 10 * 3600)
    assert not is_due(START + 10 * 3600, 3600, START + 10 * 3600 + 5)
    # The clock went back past the last run: due now rather than in a long time.
    assert is_due(START + 100, 3600, START)
    assert not is_due(None, 0, START)


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_throttle_at_most_once_a_second(steps: list[float]) -> None:
    throttle = Throttle(1.0)
    now = 1000.0
    fired = []
    for step in steps:
        now += step
        if throttle.ready(now):
            fired.append(now)
    assert fired and fired[0] == 1000.0 + steps[0]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(fired))


def test_restic_lock_retries_with_backoff(tmp_path: Path) -> None:
    from lightd.backups.restic import Restic, ResticConfig, ResticError, parse_version

    slept: list[float] = []
    restic = Restic(
        ResticConfig(
            binary="restic",
            repository=str(tmp_path / "repo"),
            password_file=tmp_path / "pw",
            env={},
            lock_retries=4,
            lock_retry_initial_seconds=0.5,
            lock_retry_max_seconds=1.5,
        ),
        sleep=slept.append,
    )
    calls = []

    def locked_three_times() -> bytes:
        calls.append(1)
        if len(calls) <= 3:
            raise ResticError("restic backup failed: unable to create lock in backend: "
                              "repository is already locked by PID 1")  # fmt: skip
        return b"ok"

    assert restic._retrying(locked_three_times, "backup") == b"ok"
    assert slept == [0.5, 1.0, 1.5]

    def other_error() -> bytes:
        raise ResticError("restic backup failed: wrong password")

    slept.clear()
    with pytest.raises(ResticError, match="wrong password"):
        restic._retrying(other_error, "backup")
    assert slept == []  # only a lock is worth waiting for
    assert parse_version("restic 0.14.0 compiled with go1.19.8 on linux/amd64") == (0, 14, 0)
    assert parse_version("nothing") is None
