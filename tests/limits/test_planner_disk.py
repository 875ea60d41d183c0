"""The planner's disk-limit steps and ``lightd plan``'s view of ``limits.disk``."""

from __future__ import annotations

import pytest

from lightd.cli.plan import ChangeKind, Current, diff
from lightd.engine.records import Actual
from lightd.reconcile.actions import (
    Action,
    ApplyDiskLimit,
    CreateMain,
    EnsureImage,
    RecordDiskOver,
    StartMain,
    StopForDisk,
)
from lightd.reconcile.planner import Gates, plan
from lightd.spec.container import ContainerSpec
from lightd.spec.observed import ObservedContainer, RuntimeState
from tests.reconcile.test_planner import NOW, POLICY, VOLUME, main, ready, spec

MiB = 1024 * 1024
OVER = "Disk limit exceeded: the volume uses 20 bytes of its 10 byte limit"
LIMITED = spec(limits={"memory": 64 * MiB, "disk": 64 * MiB})
PLAIN = spec()
NONE = Actual(main=None, install=None)


def steps(
    desired: ContainerSpec, observed: ObservedContainer | None, actual: Actual, gates: Gates
) -> list[Action]:
    return list(
        plan(
            desired=desired,
            observed=observed,
            actual=actual,
            volume_path=VOLUME,
            now=NOW,
            policy=POLICY,
            gates=gates,
        ).actions
    )


CASES = [
    pytest.param(
        LIMITED,
        ready(LIMITED),
        NONE,
        Gates(),
        [ApplyDiskLimit(limit=64 * MiB)],
        id="document-limit-applied-before-the-container-is-made",
    ),
    pytest.param(
        LIMITED,
        ready(LIMITED),
        Actual(main=main(LIMITED), install=None),
        Gates(disk_limit=32 * MiB),
        [ApplyDiskLimit(limit=64 * MiB)],
        id="document-wins-over-the-api-limit",
    ),
    pytest.param(
        LIMITED,
        ready(LIMITED, state=RuntimeState.RUNNING),
        Actual(main=main(LIMITED), install=None),
        Gates(disk_limit=64 * MiB),
        [],
        id="applied-limit-plans-nothing",
    ),
    pytest.param(
        PLAIN,
        ready(PLAIN, state=RuntimeState.RUNNING),
        Actual(main=main(PLAIN), install=None),
        Gates(disk_limit=32 * MiB),
        [],
        id="no-document-limit-leaves-the-api-limit",
    ),
    pytest.param(
        PLAIN,
        ready(PLAIN, state=RuntimeState.RUNNING),
        Actual(main=main(PLAIN), install=None),
        Gates(disk_limit=10, disk_over=OVER),
        [StopForDisk(OVER)],
        id="over-limit-running-container-is-stopped",
    ),
    pytest.param(
        PLAIN,
        ready(PLAIN),
        Actual(main=main(PLAIN, running=False), install=None),
        Gates(disk_limit=10, disk_over=OVER),
        [RecordDiskOver(OVER)],
        id="over-limit-stopped-container-is-not-started-and-says-why",
    ),
    pytest.param(
        PLAIN,
        ready(PLAIN, last_error=OVER),
        Actual(main=main(PLAIN, running=False), install=None),
        Gates(disk_limit=10, disk_over=OVER),
        [],
        id="over-limit-already-said-plans-nothing",
    ),
    pytest.param(
        PLAIN,
        ready(PLAIN, last_error=OVER),
        Actual(main=main(PLAIN, running=False), install=None),
        Gates(disk_limit=10),
        [StartMain("power running")],
        id="back-within-the-limit-starts-again",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "actual", "gates", "expected"), CASES)
def test_disk_steps(
    desired: ContainerSpec,
    observed: ObservedContainer | None,
    actual: Actual,
    gates: Gates,
    expected: list[Action],
) -> None:
    assert steps(desired, observed, actual, gates) == expected


def test_over_limit_volume_gets_its_container_made_but_not_started() -> None:
    made = steps(PLAIN, ready(PLAIN), NONE, Gates(disk_over=OVER))
    assert [type(step) for step in made] == [EnsureImage, CreateMain]


def test_lightd_plan_shows_a_disk_limit_change() -> None:
    before = spec()
    after = spec(limits={"memory": 64 * MiB, "cpu": 0.5, "disk": 256 * MiB})
    changes = diff(
        wanted={after.internal_id: after},
        current={
            before.internal_id: Current(
                internal_id=before.internal_id, document=before, exists=True, running=True
            )
        },
        invalid=set(),
    )
    assert [change.kind for change in changes] == [ChangeKind.UPDATE]
    assert f"limits.disk: None -> {256 * MiB}" in changes[0].detail
