"""Design rule 2 as a property: plan, apply to the FakeEngine, plan again: no action.

For generated desired documents, engine states and observed states, the controller
converges the container on the FakeEngine; a fresh look and a fresh plan right after
must plan nothing (waiting, with ``requeue_after``, is allowed)."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightd.engine.records import CreateRequest, Resources, Role, container_name
from lightd.reconcile.planner import resources_of
from lightd.spec.container import ContainerSpec, install_key, recreate_hash
from lightd.spec.observed import InstallState, ObservedPatch, RuntimeState
from tests.reconcile.rig import IMAGE, make_rig, spec

KEY = "mc-1"


@dataclass(frozen=True)
class EngineSeed:
    """One container to put on the engine before the controller looks."""

    role: Role
    managed: bool
    current_hash: bool
    running: bool
    exit_code: int


documents = st.one_of(
    st.none(),
    st.builds(
        lambda power, script, pattern, memory, cpu, restart, kill, image, command: spec(
            power=power,
            install_script=script,
            start_pattern=pattern,
            limits={"memory": memory, "cpu": cpu},
            restart_requested_at=restart,
            kill_requested_at=kill,
            image=image,
            startup_command=command,
        ),
        power=st.sampled_from(["running", "stopped"]),
        script=st.sampled_from([None, "echo hi"]),
        pattern=st.sampled_from([None, "Done"]),
        memory=st.sampled_from([None, 64 * 1024 * 1024, 128 * 1024 * 1024]),
        cpu=st.sampled_from([None, 0.5, 2.0]),
        restart=st.sampled_from([None, 5.0]),
        kill=st.sampled_from([None, 7.0]),
        image=st.sampled_from([IMAGE, IMAGE, "missing/image:1"]),
        command=st.sampled_from(["sleep 1000", "sleep 2000"]),
    ),
)
seeds = st.builds(
    EngineSeed,
    role=st.sampled_from([Role.MAIN, Role.INSTALL]),
    managed=st.booleans(),
    current_hash=st.booleans(),
    running=st.booleans(),
    exit_code=st.sampled_from([0, 1, 137]),
)
observations = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "install": st.sampled_from(["current-ready", "installing", "failed", "stale"]),
            "state": st.sampled_from(list(RuntimeState)),
            "engine_available": st.booleans(),
            "stop_requested": st.booleans(),
            "crashes": st.integers(min_value=0, max_value=5),
            "restart_handled": st.sampled_from([None, 5.0]),
        }
    ),
)


async def seed_engine(rig: Any, desired: ContainerSpec | None, seed: EngineSeed) -> None:
    fake = rig.fake
    name = container_name(KEY, seed.role)
    if not seed.managed:
        fake.add_foreign(name, running=seed.running)
        return
    base = desired or spec()
    volume = rig.volume_path(base.volume_id)
    spec_hash = recreate_hash(base, volume_path=volume) if seed.current_hash else "stale"
    request = CreateRequest(
        internal_id=KEY,
        role=seed.role,
        image=IMAGE,
        command=None,
        entrypoint=None,
        volume_path=volume,
        mounts={},
        extra_binds={},
        ports=[],
        environment={},
        resources=resources_of(base) if seed.current_hash else Resources(0, 0, 0, 512),
        spec_hash=spec_hash if seed.role is Role.MAIN else None,
        stdin=seed.role is Role.MAIN,
    )
    fake.installs_run = True
    cid = await fake.create(request)
    if seed.running or seed.exit_code:
        await fake.start(cid)
        if not seed.running:
            fake.exit(cid, seed.exit_code)
    fake.installs_run = False


async def seed_observed(rig: Any, desired: ContainerSpec | None, seen: dict[str, Any]) -> None:
    base = desired or spec()
    install = {
        "current-ready": (InstallState.READY, install_key(base)),
        "installing": (InstallState.INSTALLING, install_key(base)),
        "failed": (InstallState.FAILED, install_key(base)),
        "stale": (InstallState.READY, "stale-key"),
    }[seen["install"]]
    now = rig.clock.now
    await rig.observed.patch(
        KEY,
        ObservedPatch(
            install_state=install[0],
            install_key=install[1],
            install_image=base.image,
            install_started_at=now - 5,
            state=seen["state"],
            engine_available=seen["engine_available"],
            stop_requested=seen["stop_requested"],
            crash_times=tuple(now - 30 * (i + 1) for i in range(seen["crashes"])),
            crash_count=seen["crashes"],
            restart_handled=seen["restart_handled"],
        ),
    )


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    desired=documents,
    engine=st.lists(seeds, max_size=2, unique_by=lambda s: s.role),
    seen=observations,
    install_exit=st.sampled_from([0, 0, 1]),
)
def test_plan_apply_plan_again_plans_nothing(
    desired: ContainerSpec | None,
    engine: list[EngineSeed],
    seen: dict[str, Any] | None,
    install_exit: int,
) -> None:
    async def scenario(folder: Path) -> None:
        rig = make_rig(folder)
        try:
            rig.fake.install_exit_code = install_exit
            for seed in engine:
                await seed_engine(rig, desired, seed)
            if seen is not None:
                await seed_observed(rig, desired, seen)
            if desired is not None:
                rig.desired.put(desired)
            outcomes = await rig.drain(KEY)
            assert len(outcomes) < 60, outcomes
            assert await rig.replan(KEY) == ()
        finally:
            await rig.close()

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder)))
