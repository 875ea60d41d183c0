"""The planner's user decisions, config rewrites before starts and the volume hand-over."""

from __future__ import annotations

import pytest

from lightd.engine.records import Actual
from lightd.reconcile.actions import (
    CreateMain,
    EnsureImage,
    HandVolume,
    RestartMain,
    RewriteConfigs,
    StartMain,
)
from lightd.reconcile.planner import Policy, main_user, plan
from lightd.spec.container import ContainerSpec, recreate_hash
from lightd.spec.observed import ObservedContainer, RuntimeState
from tests.reconcile.test_planner import NOW, VOLUME, main, ready, spec

USER_POLICY = Policy(default_user="988:988")
PORT = "{{server.build.default.port}}"
CONFIG = [{"path": "server.properties", "parser": "properties",
           "replace": [{"match": "server-port", "value": PORT}]}]  # fmt: skip
LEGACY_HASH = recreate_hash(spec(), volume_path=VOLUME)


@pytest.mark.parametrize(
    ("desired", "observed", "expected"),
    [
        pytest.param(spec(), ObservedContainer(internal_id="mc-1"), "988:988",
                     id="a new container runs as containers.user"),
        pytest.param(spec(user="1000:1000"), ObservedContainer(internal_id="mc-1"), "1000:1000",
                     id="a document's user wins"),
        pytest.param(spec(), ObservedContainer(internal_id="mc-1", spec_hash=LEGACY_HASH), None,
                     id="a container made before users keeps the image's user"),
        pytest.param(spec(image="lightd-test/other:1"),
                     ObservedContainer(internal_id="mc-1", spec_hash=LEGACY_HASH), "988:988",
                     id="an edit of an older container moves it to containers.user"),
        pytest.param(spec(),
                     ObservedContainer(internal_id="mc-1", spec_hash="x", user_recorded=True,
                                       run_user="988:988"), "988:988",
                     id="a recorded container keeps the default"),
    ],
)  # fmt: skip
def test_main_user(desired: ContainerSpec, observed: ObservedContainer, expected: str) -> None:
    assert main_user(desired, observed, volume_path=VOLUME, policy=USER_POLICY) == expected


def test_upgrade_recreates_nothing() -> None:
    """A container created before users (hash without user) is adopted as it is."""
    desired = spec()
    obs = ready(desired, spec_hash=LEGACY_HASH, state=RuntimeState.RUNNING, container_id="c1")
    step = plan(desired=desired, observed=obs, actual=Actual(main=main(desired), install=None),
                volume_path=VOLUME, now=NOW, policy=USER_POLICY)  # fmt: skip
    assert step.actions == ()


def test_new_container_volume_is_handed_first_then_created_as_the_user() -> None:
    desired = spec()
    obs = ready(desired)
    nothing = Actual(main=None, install=None)
    step = plan(desired=desired, observed=obs, actual=nothing, volume_path=VOLUME, now=NOW,
                policy=USER_POLICY)  # fmt: skip
    assert step.actions == (HandVolume(owner="988:988"),)
    handed = obs.model_copy(update={"volume_owner": "988:988"})
    step = plan(desired=desired, observed=handed, actual=nothing, volume_path=VOLUME, now=NOW,
                policy=USER_POLICY)  # fmt: skip
    expected = recreate_hash(desired, volume_path=VOLUME, user="988:988")
    assert step.actions == (
        EnsureImage(phase="create", reason="create"),
        CreateMain(spec_hash=expected, user="988:988"),
        StartMain("created"),
    )


@pytest.mark.parametrize(
    ("observed_state", "restart", "expected"),
    [
        pytest.param("created", False, (RewriteConfigs(), StartMain("created")),
                     id="config files are rewritten before the first start"),
        pytest.param("stopped", False, (RewriteConfigs(), StartMain("power running")),
                     id="and before every later start"),
        pytest.param("running", True, (RestartMain(restart_handled=5.0, rewrite_configs=True),),
                     id="a restart rewrites them between stop and start"),
    ],
)  # fmt: skip
def test_config_rewrites_come_before_starts(
    observed_state: str, restart: bool, expected: tuple[object, ...]
) -> None:
    desired = spec(config_files=CONFIG, restart_requested_at=5.0 if restart else None)
    obs = ready(desired)
    if observed_state == "created":
        actions = plan(desired=desired, observed=obs, actual=Actual(main=None, install=None),
                       volume_path=VOLUME, now=NOW, policy=Policy()).actions  # fmt: skip
        assert actions[-2:] == expected
        return
    running = observed_state == "running"
    obs = obs.model_copy(update={
        "state": RuntimeState.RUNNING if running else RuntimeState.OFFLINE,
        "container_id": "c1", "spec_hash": recreate_hash(desired, volume_path=VOLUME),
    })  # fmt: skip
    actual = Actual(main=main(desired, running=running, status="running" if running else "exited"),
                    install=None)  # fmt: skip
    step = plan(desired=desired, observed=obs, actual=actual, volume_path=VOLUME, now=NOW,
                policy=Policy())  # fmt: skip
    assert step.actions == expected
