"""An install container that was created but never started is run again, not "finished".

Docker reports exit code 0 for a container that never ran; lightd killed between the
create and the start of an install must not take that for a successful install.
"""

from __future__ import annotations

import pytest

from lightd.engine.records import Actual, ActualContainer
from lightd.reconcile.actions import FinishInstall, RemoveInstall
from lightd.reconcile.planner import Policy, plan
from lightd.spec.container import ContainerSpec, install_key
from lightd.spec.observed import InstallState, ObservedContainer

NOW = 1_000_000.0


def installer(*, status: str, running: bool) -> ActualContainer:
    return ActualContainer(
        id="i1",
        name="lightd-mc-1-install",
        managed=True,
        internal_id="mc-1",
        role="install",
        spec_hash=None,
        running=running,
        status=status,
        exit_code=0,
        started_at=None if status == "created" else NOW - 5,
        finished_at=None,
        memory=None,
        memory_swap=None,
        nano_cpus=None,
        pids_limit=None,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param("created", RemoveInstall, id="never-started-is-removed-to-run-again"),
        pytest.param("exited", FinishInstall, id="exited-is-finished"),
    ],
)
def test_install_container_not_running(status: str, expected: type) -> None:
    desired = ContainerSpec.model_validate(
        {
            "internal_id": "mc-1",
            "image": "lightd-test/busybox:latest",
            "volume_id": "0123456789abcdef",
            "startup_command": "sleep 1000",
            "install_script": "echo hi",
        }
    )
    observed = ObservedContainer(
        internal_id="mc-1",
        install_state=InstallState.INSTALLING,
        install_key=install_key(desired),
        install_image=desired.image,
        install_started_at=NOW - 5,
    )
    step = plan(
        desired=desired,
        observed=observed,
        actual=Actual(main=None, install=installer(status=status, running=False)),
        volume_path="/data/volumes/v1",
        now=NOW,
        policy=Policy(),
    )
    assert [type(action) for action in step.actions] == [expected]
