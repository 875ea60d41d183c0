"""Panel notifications without a daemon: what a change is told as, the outbox bound, and
how a panel's Retry-After is read."""

from __future__ import annotations

from typing import Any

import pytest

from lightd.remote.client import retry_after_seconds
from lightd.remote.events import Reported, changes, failure, status
from lightd.remote.outbox import Outbox
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState


def observed(**fields: Any) -> ObservedContainer:
    return ObservedContainer(internal_id="srv", **fields)


def told(before: Reported | None, now: ObservedContainer | None) -> list[str]:
    found, _record = changes("srv", before, now)
    return [n.body.get("status") or f"error:{n.body['data']}" for n in found]


def walk(*states: ObservedContainer | None) -> list[str]:
    record: Reported | None = None
    out: list[str] = []
    for state in states:
        found, record = changes("srv", record, state)
        out += [n.body.get("status") or f"error:{n.body['data']}" for n in found]
    return out


def test_a_new_container_is_told_installing_but_not_its_first_offline() -> None:
    assert told(None, observed()) == ["installing"]


def test_a_whole_life_in_order() -> None:
    ready = observed(install_state=InstallState.READY)
    assert walk(
        observed(),
        ready,
        ready.model_copy(update={"state": RuntimeState.STARTING}),
        ready.model_copy(update={"state": RuntimeState.RUNNING}),
        ready.model_copy(update={"state": RuntimeState.STOPPING}),
        ready.model_copy(update={"state": RuntimeState.OFFLINE}),
        None,
    ) == ["installing", "ready", "starting", "running", "stopping", "offline"]


def test_both_states_at_once_keep_a_sensible_order() -> None:
    running = Reported(install="ready", state="running")
    reinstall = observed(install_state=InstallState.INSTALLING, state=RuntimeState.OFFLINE)
    assert told(running, reinstall) == ["offline", "installing"]
    installing = Reported(install="installing", state="offline")
    up = observed(install_state=InstallState.READY, state=RuntimeState.STARTING)
    assert told(installing, up) == ["ready", "starting"]


def test_failures_are_told_once_each() -> None:
    installing = observed()
    failed = observed(install_state=InstallState.FAILED, last_error="exit code 3")
    assert walk(installing, failed, failed) == ["installing", "error:exit code 3"]
    running = observed(install_state=InstallState.READY, state=RuntimeState.RUNNING)
    crashed = running.model_copy(
        update={"state": RuntimeState.OFFLINE, "crash_count": 1, "last_error": "Crashed 1"}
    )
    again = crashed.model_copy(update={"crash_count": 2})
    assert walk(running, crashed, running, again) == [
        "ready",
        "running",
        "offline",
        "error:Crashed 1",
        "running",
        "offline",
        "error:Crashed 1",
    ]


def test_deleting_an_offline_container_tells_nothing() -> None:
    assert told(Reported(install="ready", state="offline"), None) == []
    assert told(Reported(install="ready", state="running"), None) == ["offline"]


def test_bound_collapses_old_states_and_keeps_each_final_state() -> None:
    box = Outbox(max_entries=4)
    for value in ["installing", "ready", "starting", "running", "stopping", "offline"]:
        box.add("a", status("a", value))
    box.add("b", status("b", "installing"))
    box.add("a", failure("a", "boom"))
    assert len(box) == 4
    assert [e.body.get("status") or "error" for e in box.entries("a")] == [
        "stopping",
        "offline",
        "error",
    ]
    assert [e.body["status"] for e in box.entries("b")] == ["installing"]
    assert box.collapsed == 4
    # Order overall is kept: sequence numbers only grow.
    seqs = [e.seq for e in box.entries()]
    assert seqs == sorted(seqs)


def test_bound_drops_errors_before_any_final_state_and_never_the_one_being_sent() -> None:
    box = Outbox(max_entries=2)
    first = box.add("a", status("a", "installing"))
    box.pin(first)
    box.add("a", failure("a", "x"))
    box.add("b", status("b", "ready"))
    box.add("c", status("c", "running"))
    # Only final states (and the pinned one) left: over the bound rather than lose one.
    assert [e.server for e in box.entries()] == ["a", "b", "c"]
    box.add("a", status("a", "ready"))
    assert [e.body["status"] for e in box.entries("a")] == ["installing", "ready"]
    box.unpin(first)
    box.add("b", status("b", "starting"))
    assert [e.body["status"] for e in box.entries("a")] == ["ready"]
    assert [e.body["status"] for e in box.entries("b")] == ["starting"]


def test_snapshot_restores_order_records_and_sequence() -> None:
    box = Outbox(max_entries=100)
    box.add("b", status("b", "installing"))
    box.add("a", status("a", "installing"))
    box.add("b", status("b", "ready"))
    box.reported["a"] = Reported(install="installing", state="offline")
    again = Outbox(max_entries=100)
    again.restore(box.snapshot())
    assert again.snapshot() == box.snapshot()
    assert again.servers() == ["b", "a"]
    assert again.add("a", status("a", "ready")).seq == 4
    assert again.reported["a"] == Reported(install="installing", state="offline")


def test_restore_refuses_a_foreign_document() -> None:
    with pytest.raises(ValueError):
        Outbox(max_entries=10).restore({"entries": [{"seq": "x"}]})


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 30 ", 30.0),
        ("86400", 600.0),  # capped
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),  # in the past
        ("Thu, 01 Jan 1970 00:01:40 GMT", 90.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # delay-seconds is an integer
    ],
)
def test_retry_after_as_seconds_or_a_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, now=10.0) == seconds
