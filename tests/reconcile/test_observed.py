"""Observed state changes only through typed patches checked against the move table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lightd.errors import IllegalTransition
from lightd.spec.observed import (
    RUNTIME_MOVES,
    ObservedContainer,
    ObservedPatch,
    RuntimeState,
    apply_patch,
)
from lightd.store import DocumentStore
from lightd.store.observed import ObservedStore

R = RuntimeState


def at(state: RuntimeState) -> ObservedContainer:
    return ObservedContainer(internal_id="mc-1", state=state)


MOVES = [
    pytest.param(R.OFFLINE, R.STARTING, True, id="offline-may-start"),
    pytest.param(R.OFFLINE, R.RUNNING, True, id="offline-may-be-adopted-as-running"),
    pytest.param(R.OFFLINE, R.STOPPING, True, id="offline-may-stop-a-container-found-running"),
    pytest.param(R.STARTING, R.RUNNING, True, id="starting-becomes-running-on-its-pattern"),
    pytest.param(R.STARTING, R.OFFLINE, True, id="a-failed-start-goes-offline"),
    pytest.param(R.RUNNING, R.STOPPING, True, id="running-may-stop"),
    pytest.param(R.RUNNING, R.OFFLINE, True, id="running-may-crash"),
    pytest.param(R.RUNNING, R.STARTING, False, id="running-never-starts-again-without-stopping"),
    pytest.param(R.STOPPING, R.OFFLINE, True, id="stopping-ends-offline"),
    pytest.param(R.STOPPING, R.STARTING, True, id="stopping-may-be-adopted-as-starting"),
]


@pytest.mark.parametrize(("current", "target", "legal"), MOVES)
def test_move_table(current: RuntimeState, target: RuntimeState, legal: bool) -> None:
    assert (target in RUNTIME_MOVES[current]) is legal
    if legal:
        assert apply_patch(at(current), ObservedPatch(state=target)).state is target
    else:
        with pytest.raises(IllegalTransition):
            apply_patch(at(current), ObservedPatch(state=target))


def test_an_illegal_move_names_the_expected_and_the_actual_state() -> None:
    with pytest.raises(IllegalTransition) as caught:
        apply_patch(at(R.RUNNING), ObservedPatch(state=R.STARTING))
    error = caught.value
    assert error.actual == "running"
    assert set(error.expected) == {"offline", "starting", "stopping"}
    assert "found running" in error.message and "expected" in error.message


def test_a_patch_decided_in_another_state_is_refused() -> None:
    stale = ObservedPatch(state=R.RUNNING, expect=frozenset({R.STARTING}))
    with pytest.raises(IllegalTransition) as caught:
        apply_patch(at(R.OFFLINE), stale)
    assert caught.value.expected == ("starting",)
    assert caught.value.actual == "offline"


def test_unset_fields_stay_and_none_is_a_value() -> None:
    current = ObservedContainer(internal_id="mc-1", last_error="boom", container_id="c1")
    patched = apply_patch(current, ObservedPatch(last_error=None))
    assert patched.last_error is None
    assert patched.container_id == "c1"


def test_patches_compose_later_wins() -> None:
    first = ObservedPatch(state=R.STOPPING, stop_requested=True)
    both = first.then(ObservedPatch(state=R.OFFLINE, crash_times=(1.0,)))
    assert both.changes() == {"state": R.OFFLINE, "stop_requested": True, "crash_times": [1.0]}


def test_a_wrong_value_is_rejected_not_stored() -> None:
    bad: Any = "zzz"
    with pytest.raises(ValidationError):
        apply_patch(at(R.OFFLINE), ObservedPatch(install_state=bad))


def test_store_patch_persists_notifies_and_skips_no_ops(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = ObservedStore(DocumentStore(tmp_path))
        heard: list[tuple[Any, Any]] = []
        store.subscribe(lambda old, new: heard.append((old, new)))
        created = await store.patch("mc-1", ObservedPatch(state=R.STARTING))
        assert created.created_at > 0
        await store.patch("mc-1", ObservedPatch(state=R.STARTING))  # no change: no event
        await store.patch("mc-1", ObservedPatch(state=R.RUNNING))
        assert [new.state for _old, new in heard] == [R.STARTING, R.RUNNING]
        with pytest.raises(IllegalTransition):
            await store.patch("mc-1", ObservedPatch(state=R.STARTING))
        assert store.get("mc-1") is not None and store.get("mc-1").state is R.RUNNING  # type: ignore[union-attr]
        reloaded = ObservedStore(DocumentStore(tmp_path))
        reloaded.load()
        assert reloaded.get("mc-1") == store.get("mc-1")

    asyncio.run(scenario())
