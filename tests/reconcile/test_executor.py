"""Each action applied to the FakeEngine: the outcome it returns, the states it reports on
the way, and what it did to the engine. One row per action."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lightd.engine.fake import FakeEngine
from lightd.engine.records import Actual, CreateRequest, Role, container_name
from lightd.errors import EngineUnavailable, SpecInvalid
from lightd.reconcile.actions import (
    Action,
    Adopt,
    ClearConflict,
    ClearRefusal,
    Crash,
    CreateMain,
    EnsureImage,
    FinishInstall,
    Forget,
    HandVolume,
    KillInstall,
    KillMain,
    RecordEngineBack,
    RecordExit,
    RecordKillHandled,
    RecordRestartHandled,
    RemoveInstall,
    RemoveMain,
    ReportBlocked,
    ReportRefused,
    RestartMain,
    RewriteConfigs,
    SkipInstall,
    StartInstall,
    StartMain,
    StopMain,
    UpdateLimits,
)
from lightd.reconcile.executor import Executor, Outcome
from lightd.reconcile.planner import Policy, resources_of
from lightd.runtime.console import ConsoleHub
from lightd.spec.container import ContainerSpec
from lightd.spec.observed import InstallState, ObservedContainer, ObservedPatch, RuntimeState
from tests.reconcile.rig import IMAGE, spec

NOW = 1_000_000.0
D = spec()
MAIN = container_name("mc-1", Role.MAIN)
INSTALL = container_name("mc-1", Role.INSTALL)
R = RuntimeState


@dataclass
class World:
    fake: FakeEngine
    volume: str
    seen: dict[str, ObservedContainer] = field(default_factory=dict)

    def get(self, internal_id: str) -> ObservedContainer | None:
        return self.seen.get(internal_id)

    async def put(self, role: Role, *, running: bool, code: int = 0) -> str:
        request = CreateRequest(
            internal_id="mc-1",
            role=role,
            image=IMAGE,
            command=None,
            entrypoint=None,
            volume_path=self.volume,
            mounts={},
            extra_binds={},
            ports=[],
            environment={},
            resources=resources_of(D),
            spec_hash="h1" if role is Role.MAIN else None,
            stdin=role is Role.MAIN,
        )
        self.fake.installs_run = True
        cid = await self.fake.create(request)
        await self.fake.start(cid)
        if not running:
            self.fake.exit(cid, code)
        return cid

    async def actual(self) -> Actual:
        return Actual(main=await self.fake.inspect(MAIN), install=await self.fake.inspect(INSTALL))


Setup = Callable[[World], Any]


async def nothing(world: World) -> None:
    return None


async def running_main(world: World) -> None:
    await world.put(Role.MAIN, running=True)


async def stopped_main(world: World) -> None:
    await world.put(Role.MAIN, running=False, code=0)


async def created_main_seen(world: World) -> None:
    cid = await world.put(Role.MAIN, running=False)
    world.seen["mc-1"] = ObservedContainer(internal_id="mc-1", container_id=cid)


async def running_install(world: World) -> None:
    await world.put(Role.INSTALL, running=True)


async def exited_install(world: World) -> None:
    cid = await world.put(Role.INSTALL, running=True)
    world.fake.write_output(cid, "step 1\nstep 2")
    world.fake.exit(cid, 0)


async def failed_install(world: World) -> None:
    await world.put(Role.INSTALL, running=False, code=3)


def engine_has(name: str, *, running: bool | None = None) -> Callable[[FakeEngine], bool]:
    def check(fake: FakeEngine) -> bool:
        found = fake.named(name)
        return found is not None and (running is None or found.running is running)

    return check


def engine_lacks(name: str) -> Callable[[FakeEngine], bool]:
    return lambda fake: fake.named(name) is None


def anything(fake: FakeEngine) -> bool:
    return True


CRASH = Crash(times=(NOW - 5, NOW), count=2, gave_up=False, message="Crashed with exit code 1")
GAVE_UP = Crash(times=(NOW,) * 5, count=5, gave_up=True, message="Crashed 5 times")

CASES = [
    pytest.param(
        ReportBlocked("Volume not found"), D, nothing,
        {"blocked_reason": "Volume not found", "last_error": "Volume not found"}, [], anything,
        id="report-blocked-records-the-reason-as-the-error",
    ),
    pytest.param(
        ReportRefused("no port"), D, nothing,
        {"blocked_reason": "no port", "last_error": "no port"}, [], anything,
        id="report-refused-records-the-refusal",
    ),
    pytest.param(
        ClearRefusal(), D, nothing, {"blocked_reason": None, "last_error": None}, [], anything,
        id="clear-refusal-lifts-block-and-error",
    ),
    pytest.param(
        ClearConflict(), D, nothing, {"blocked_reason": None}, [], anything,
        id="clear-conflict-lifts-the-block-only",
    ),
    pytest.param(
        RecordKillHandled(kill_handled=4.0), D, nothing, {"kill_handled": 4.0}, [], anything,
        id="a-kill-while-stopped-is-marked-handled",
    ),
    pytest.param(
        RecordRestartHandled(restart_handled=6.0), D, nothing, {"restart_handled": 6.0}, [],
        anything, id="a-restart-while-stopped-is-marked-handled",
    ),
    pytest.param(
        RecordEngineBack(), D, nothing, {"engine_available": True}, [], anything,
        id="engine-back-is-recorded",
    ),
    pytest.param(
        Adopt(starting=True), D, running_main, {"state": R.STARTING, "engine_available": True},
        [], anything, id="adopting-before-the-pattern-matched-is-starting",
    ),
    pytest.param(
        Adopt(starting=False), D, running_main, {"state": R.RUNNING, "engine_available": True},
        [], anything, id="adopting-otherwise-is-running",
    ),
    pytest.param(
        RecordExit(exit_code=0, reason="stopped"), D, stopped_main,
        {"state": R.OFFLINE, "exit_code": 0, "engine_available": True, "stop_requested": False},
        [], anything, id="an-asked-exit-is-no-crash",
    ),
    pytest.param(
        RecordExit(exit_code=1, reason="crashed", crash=CRASH), D, stopped_main,
        {
            "state": R.OFFLINE, "exit_code": 1, "engine_available": True,
            "stop_requested": False, "crash_times": [NOW - 5, NOW], "crash_count": 2,
            "last_error": "Crashed with exit code 1",
        },
        [], anything, id="a-crash-records-the-planners-bookkeeping",
    ),
    pytest.param(
        RecordExit(exit_code=1, reason="crashed", crash=GAVE_UP), D, stopped_main,
        {
            "state": R.OFFLINE, "exit_code": 1, "engine_available": True,
            "stop_requested": False, "crash_times": [NOW] * 5, "crash_count": 5,
            "gave_up": True, "last_error": "Crashed 5 times",
        },
        [], anything, id="the-last-crash-gives-up",
    ),
    pytest.param(
        SkipInstall(install_key="k1"), D, nothing,
        {
            "install_state": InstallState.READY, "install_key": "k1", "install_image": IMAGE,
            "install_exit_code": None, "last_error": None,
        },
        [], anything, id="skipping-the-install-makes-it-ready",
    ),
    pytest.param(
        EnsureImage(phase="create"), D, nothing, None, [], anything,
        id="a-present-image-changes-nothing",
    ),
    pytest.param(
        StartInstall(install_key="k1"), spec(install_script="echo hi"), nothing, None,
        [{
            "install_state": InstallState.INSTALLING, "install_key": "k1",
            "install_image": IMAGE, "install_started_at": NOW, "install_exit_code": None,
            "install_output_tail": None, "last_error": None, "blocked_reason": None,
        }],
        engine_has(INSTALL), id="starting-an-install-reports-installing-first",
    ),
    pytest.param(
        FinishInstall(exit_code=0), D, exited_install,
        {
            "install_state": InstallState.READY, "install_exit_code": 0,
            "install_output_tail": "step 1\nstep 2", "last_error": None, "volume_owner": None,
        },
        [], engine_lacks(INSTALL), id="a-finished-install-keeps-its-tail-and-goes",
    ),
    pytest.param(
        FinishInstall(exit_code=3), D, failed_install,
        {
            "install_state": InstallState.FAILED, "install_exit_code": 3,
            "install_output_tail": "", "last_error": "Install script failed with exit code 3",
        },
        [], engine_lacks(INSTALL), id="a-failed-install-says-its-exit-code",
    ),
    pytest.param(
        KillInstall(), D, running_install,
        {
            "install_state": InstallState.FAILED, "install_exit_code": None,
            "install_output_tail": "", "last_error": "Install timed out after 1800 s",
        },
        [], engine_lacks(INSTALL), id="a-timed-out-install-is-killed-and-failed",
    ),
    pytest.param(
        RemoveInstall(), D, failed_install, None, [], engine_lacks(INSTALL),
        id="remove-install-removes-it",
    ),
    pytest.param(
        CreateMain(spec_hash="h2"), D, nothing,
        {"container_id": "<main>", "spec_hash": "h2", "state": R.OFFLINE, "blocked_reason": None,
         "run_user": None, "user_recorded": True},
        [], engine_has(MAIN, running=False), id="create-records-the-new-container",
    ),
    pytest.param(
        StartMain("created"), D, created_main_seen,
        {"state": R.RUNNING, "started_at": NOW - 1, "container_id": "<main>", "exit_code": None},
        [{"state": R.STARTING, "stop_requested": False, "last_error": None}],
        engine_has(MAIN, running=True), id="a-start-reports-starting-then-running",
    ),
    pytest.param(
        StartMain("restart requested", restart_handled=9.0), spec(start_pattern="Done"),
        created_main_seen,
        {"state": R.STARTING, "started_at": NOW - 1, "container_id": "<main>", "exit_code": None},
        [{
            "state": R.STARTING, "stop_requested": False, "last_error": None,
            "restart_handled": 9.0, "gave_up": False, "crash_times": [], "crash_count": 0,
        }],
        engine_has(MAIN, running=True), id="a-requested-start-resets-the-crash-count",
    ),
    pytest.param(
        StopMain("power stopped"), D, running_main, {"state": R.OFFLINE, "exit_code": 0},
        [{"state": R.STOPPING, "stop_requested": True}], engine_has(MAIN, running=False),
        id="a-stop-reports-stopping-then-offline",
    ),
    pytest.param(
        KillMain("kill requested", kill_handled=5.0), spec(power="stopped"), running_main,
        {"state": R.OFFLINE, "exit_code": 137, "kill_handled": 5.0},
        [{"state": R.STOPPING, "stop_requested": True}], engine_has(MAIN, running=False),
        id="a-kill-kills-and-marks-the-request-handled",
    ),
    pytest.param(
        RestartMain(restart_handled=8.0), D, running_main,
        {"state": R.RUNNING, "started_at": NOW - 1, "container_id": "<main>", "exit_code": None},
        [
            {"state": R.STOPPING, "stop_requested": True},
            {"state": R.OFFLINE, "exit_code": 0},
            {
                "state": R.STARTING, "stop_requested": False, "last_error": None,
                "restart_handled": 8.0, "gave_up": False, "crash_times": [], "crash_count": 0,
            },
        ],
        engine_has(MAIN, running=True), id="a-restart-stops-then-starts-the-same-container",
    ),
    pytest.param(
        UpdateLimits(), spec(limits={"memory": 256 * 1024 * 1024, "cpu": 2}), running_main, None,
        [], lambda fake: fake.named(MAIN).resources.nano_cpus == 2_000_000_000,
        id="limits-change-live-on-the-same-container",
    ),
    pytest.param(
        RemoveMain("container deleted"), None, stopped_main, None, [], engine_lacks(MAIN),
        id="removing-an-unknown-container-records-nothing",
    ),
    pytest.param(
        RemoveMain("spec changed: re-create"), D, created_main_seen,
        {"container_id": None, "spec_hash": None, "state": R.OFFLINE}, [], engine_lacks(MAIN),
        id="removing-a-known-container-clears-its-id",
    ),
    pytest.param(
        Forget(), None, nothing, "forget", [], anything, id="forget-forgets",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("action", "desired", "setup", "patch", "reports", "engine"), CASES)
def test_each_action(
    tmp_path: Path,
    action: Action,
    desired: ContainerSpec | None,
    setup: Setup,
    patch: dict[str, Any] | str | None,
    reports: list[dict[str, Any]],
    engine: Callable[[FakeEngine], bool],
) -> None:
    async def scenario() -> None:
        volume = tmp_path / "volume"
        volume.mkdir()
        world = World(fake=FakeEngine(images=(IMAGE,)), volume=str(volume))
        world.fake.now = NOW
        await setup(world)
        world.fake.installs_run = True
        consoles = ConsoleHub(world.fake, on_match=lambda *_: None, on_end=lambda _key: None)
        executor = Executor(
            engine=world.fake,
            observed=world,
            consoles=consoles,
            policy=Policy(),
            data_dir=tmp_path / "data",
            interrupted=lambda _key: asyncio.Event(),
            clock=lambda: NOW,
        )
        heard: list[ObservedPatch] = []

        async def report(change: ObservedPatch) -> None:
            heard.append(change)

        try:
            outcome = await executor.apply(
                action,
                internal_id="mc-1",
                desired=desired,
                actual=await world.actual(),
                volume_path=str(volume),
                report=report,
            )
        finally:
            consoles.stop_all()
            world.fake.close()
        main = world.fake.named(MAIN)
        expected = patch
        if isinstance(expected, dict) and expected.get("container_id") == "<main>":
            assert main is not None
            expected = {**expected, "container_id": main.id}
        if expected == "forget":
            assert outcome == Outcome(forget=True)
        elif expected is None:
            assert outcome.patch is None
        else:
            assert outcome.patch is not None and outcome.patch.changes() == expected
        assert [change.changes() for change in heard] == reports
        assert engine(world.fake)

    asyncio.run(scenario())


def test_a_missing_image_that_cannot_be_pulled_fails_the_install(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeEngine()
        heard: list[ObservedPatch] = []

        async def report(change: ObservedPatch) -> None:
            heard.append(change)

        executor = Executor(
            engine=fake,
            observed=World(fake=fake, volume=str(tmp_path)),
            consoles=ConsoleHub(fake, on_match=lambda *_: None, on_end=lambda _key: None),
            policy=Policy(),
            data_dir=tmp_path,
            interrupted=lambda _key: asyncio.Event(),
        )
        with pytest.raises(SpecInvalid):
            await executor.apply(
                EnsureImage(phase="install"),
                internal_id="mc-1",
                desired=D,
                actual=Actual(main=None, install=None),
                volume_path=str(tmp_path),
                report=report,
            )
        assert [change.changes() for change in heard] == [
            {
                "install_state": InstallState.FAILED,
                "install_image": IMAGE,
                "last_error": "Failed to create Docker container: image not found",
            }
        ]

    asyncio.run(scenario())


def test_a_start_the_engine_refuses_reports_offline_and_raises(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeEngine(images=(IMAGE,))
        world = World(fake=fake, volume=str(tmp_path))
        await created_main_seen(world)
        fake.fail_next("start", "transient")
        heard: list[ObservedPatch] = []

        async def report(change: ObservedPatch) -> None:
            heard.append(change)

        executor = Executor(
            engine=fake,
            observed=world,
            consoles=ConsoleHub(fake, on_match=lambda *_: None, on_end=lambda _key: None),
            policy=Policy(),
            data_dir=tmp_path,
            interrupted=lambda _key: asyncio.Event(),
        )
        with pytest.raises(EngineUnavailable):
            await executor.apply(
                StartMain("power running"),
                internal_id="mc-1",
                desired=D,
                actual=await world.actual(),
                volume_path=str(tmp_path),
                report=report,
            )
        assert [change.state for change in heard] == [R.STARTING, R.OFFLINE]

    asyncio.run(scenario())


def _executor(tmp_path: Path, fake: FakeEngine, world: World, policy: Policy) -> Executor:
    return Executor(
        engine=fake,
        observed=world,
        consoles=ConsoleHub(fake, on_match=lambda *_: None, on_end=lambda _key: None),
        policy=policy,
        data_dir=tmp_path / "data",
        interrupted=lambda _key: asyncio.Event(),
        clock=lambda: NOW,
    )


async def _nowhere(_change: ObservedPatch) -> None:
    return None


def test_create_as_a_user_drops_capabilities(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeEngine(images=(IMAGE,))
        world = World(fake=fake, volume=str(tmp_path))
        executor = _executor(tmp_path, fake, world, Policy(cap_drop=("net_raw", "mknod")))
        outcome = await executor.apply(
            CreateMain(spec_hash="h", user="988:988"),
            internal_id="mc-1",
            desired=spec(read_only_rootfs=True),
            actual=await world.actual(),
            volume_path=str(tmp_path),
            report=_nowhere,
        )
        made = fake.named(MAIN)
        assert made is not None and made.request is not None
        assert (made.request.user, made.request.cap_drop, made.request.read_only) == (
            "988:988", ("net_raw", "mknod"), True,
        )  # fmt: skip
        assert outcome.patch is not None
        assert outcome.patch.changes()["run_user"] == "988:988"
        fake.close()

    asyncio.run(scenario())


def test_hand_volume_walks_once_and_records_it(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "world" / "region").mkdir(parents=True)
    (volume / "world" / "region" / "r.0.0.mca").write_bytes(b"x")
    (volume / "outside-link").symlink_to("/etc/passwd")

    async def scenario() -> None:
        fake = FakeEngine(images=(IMAGE,))
        world = World(fake=fake, volume=str(volume))
        outcome = await _executor(tmp_path, fake, world, Policy()).apply(
            HandVolume(owner="4321:4322"),
            internal_id="mc-1",
            desired=D,
            actual=await world.actual(),
            volume_path=str(volume),
            report=_nowhere,
        )
        assert outcome.patch is not None
        assert outcome.patch.changes() == {"volume_owner": "4321:4322"}
        fake.close()

    asyncio.run(scenario())
    for path in (volume, volume / "world", volume / "world" / "region" / "r.0.0.mca"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)
    assert os.lstat(volume / "outside-link").st_uid == 4321
    assert os.stat("/etc/passwd").st_uid == 0, "the link was not followed"


def test_rewrite_configs_reports_a_parse_error_and_keeps_the_file(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "server.properties").write_text("# keep\nserver-port=1\n")
    (volume / "broken.yml").write_text("a: [1\n")
    desired = spec(
        ports=[{"ip": "127.0.0.1", "port": 25565}],
        config_files=[
            {"path": "server.properties", "parser": "properties",
             "replace": [{"match": "server-port", "value": "{{server.build.default.port}}"}]},
            {"path": "broken.yml", "parser": "yaml", "replace": [{"match": "a", "value": "1"}]},
        ],
    )  # fmt: skip

    async def scenario() -> ObservedPatch | None:
        fake = FakeEngine(images=(IMAGE,))
        world = World(fake=fake, volume=str(volume))
        outcome = await _executor(tmp_path, fake, world, Policy()).apply(
            RewriteConfigs(),
            internal_id="mc-1",
            desired=desired,
            actual=await world.actual(),
            volume_path=str(volume),
            report=_nowhere,
        )
        fake.close()
        return outcome.patch

    patch = asyncio.run(scenario())
    assert (volume / "server.properties").read_text() == "# keep\nserver-port=25565\n"
    assert (volume / "broken.yml").read_text() == "a: [1\n"
    assert patch is not None
    error = patch.changes()["config_error"]
    assert error.startswith("config file broken.yml: not valid YAML")
