"""The controller and the executor against the FakeEngine: outcomes, retries, conflicts,
the engine going away and coming back. No Docker, no threads but console readers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lightd.engine.records import Role, container_name
from lightd.spec.container import install_key
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState
from tests.reconcile.rig import IMAGE, Rig, make_rig, spec

MAIN = container_name("mc-1", Role.MAIN)
INSTALL = container_name("mc-1", Role.INSTALL)


def run(tmp_path: Path, scenario: Callable[[Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        try:
            await scenario(rig)
        finally:
            await rig.close()

    asyncio.run(main())


def observed(rig: Rig) -> ObservedContainer:
    found = rig.observed.get("mc-1")
    assert found is not None
    return found


def test_a_new_container_is_created_started_and_settled(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        outcomes = await rig.drain("mc-1")
        assert outcomes and set(outcomes) == {"converged"}
        main = rig.fake.named(MAIN)
        assert main is not None and main.running
        seen = observed(rig)
        assert seen.install_state is InstallState.READY
        assert seen.state is RuntimeState.RUNNING
        assert seen.container_id == main.id
        assert seen.revision_applied == rig.desired.digest("mc-1")
        assert await rig.replan("mc-1") == ()

    run(tmp_path, scenario)


def test_an_install_runs_first_and_keeps_its_log(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.fake.installs_run = True
        rig.desired.put(spec(install_script="echo hi"))
        await rig.drain("mc-1")
        install = rig.fake.named(INSTALL)
        assert install is not None and install.running
        assert observed(rig).install_state is InstallState.INSTALLING
        assert rig.fake.named(MAIN) is None
        rig.fake.write_output(INSTALL, "installing things")
        rig.fake.exit(INSTALL, 0)
        await rig.drain("mc-1")
        assert rig.fake.named(INSTALL) is None  # removed after reading its log
        seen = observed(rig)
        assert seen.install_state is InstallState.READY
        assert seen.install_output_tail == "installing things"
        assert rig.controller.executor.install_logs.read("mc-1") == "installing things\n"
        assert seen.state is RuntimeState.RUNNING

    run(tmp_path, scenario)


def test_a_failed_install_is_reported_and_nothing_starts(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.fake.install_exit_code = 2
        rig.desired.put(spec(install_script="exit 2"))
        await rig.drain("mc-1")
        seen = observed(rig)
        assert seen.install_state is InstallState.FAILED
        assert seen.last_error == "Install script failed with exit code 2"
        assert rig.fake.named(MAIN) is None
        assert await rig.replan("mc-1") == ()

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("create", id="a-transient-create-failure-is-retried"),
        pytest.param("start", id="a-transient-start-failure-is-retried"),
        pytest.param("inspect", id="a-transient-inspect-failure-is-retried"),
    ],
)
def test_transient_errors_are_retried_with_backoff(tmp_path: Path, kind: str) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        # One look at the engine inspects the main and the install container.
        rig.fake.fail_next(kind, "transient", times=4 if kind == "inspect" else 2)
        assert (await rig.drain("mc-1"))[-1] == "transient"
        assert rig.queue.failures("mc-1") == 1
        assert not rig.controller.engine_up
        assert (await rig.drain("mc-1"))[-1] == "transient"
        assert rig.queue.failures("mc-1") == 2  # the delay doubles with each failure
        outcomes = await rig.drain("mc-1")
        assert outcomes[-1] == "converged"
        assert rig.queue.failures("mc-1") == 0
        assert observed(rig).state is RuntimeState.RUNNING
        if kind == "start":  # a start that never happened is no crash
            assert observed(rig).crash_count == 0

    run(tmp_path, scenario)


def test_a_namesake_lightd_does_not_manage_is_reported_and_left_alone(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        squatter = rig.fake.add_foreign(MAIN)
        rig.desired.put(spec())
        await rig.drain("mc-1")
        seen = observed(rig)
        assert seen.blocked_reason is not None and seen.blocked_reason.startswith("Conflict")
        assert rig.fake.containers[squatter].running  # untouched
        assert ("remove", squatter) not in rig.fake.calls
        assert await rig.replan("mc-1") == ()
        await rig.fake.remove(squatter)  # someone else clears the name
        await rig.drain("mc-1")
        assert observed(rig).blocked_reason is None
        assert observed(rig).state is RuntimeState.RUNNING

    run(tmp_path, scenario)


def test_an_engine_conflict_is_reported_and_retried(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        rig.fake.fail_next("start", "conflict")
        assert (await rig.drain("mc-1"))[-1] == "conflict"
        seen = observed(rig)
        assert seen.last_error is not None and seen.last_error.startswith("Conflict: ")
        assert seen.state is RuntimeState.OFFLINE
        assert rig.controller.engine_up  # a conflict says nothing about the engine
        assert (await rig.drain("mc-1"))[-1] == "converged"
        assert observed(rig).last_error is None

    run(tmp_path, scenario)


def test_a_missing_image_blocks_until_the_spec_changes(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec(image="nowhere/none:1"))
        assert (await rig.drain("mc-1"))[-1] == "invalid_spec"
        seen = observed(rig)
        assert seen.last_error == "Failed to create Docker container: image not found"
        assert seen.blocked_revision == rig.desired.digest("mc-1")
        calls = len(rig.fake.calls)
        await rig.drain("mc-1")
        assert len(rig.fake.calls) == calls  # blocked: not even a look at the engine
        rig.desired.put(spec(image=IMAGE))
        assert (await rig.drain("mc-1"))[-1] == "converged"
        assert observed(rig).blocked_revision is None
        assert observed(rig).state is RuntimeState.RUNNING

    run(tmp_path, scenario)


def test_a_crash_is_counted_and_restarted_after_its_backoff(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        await rig.drain("mc-1")
        first = rig.fake.named(MAIN)
        assert first is not None
        rig.advance(60)
        rig.fake.exit(MAIN, 3)
        await rig.drain("mc-1")
        seen = observed(rig)
        assert seen.crash_count == 1
        assert seen.crash_times == [rig.clock.now]
        assert seen.last_error == "Crashed with exit code 3"
        assert seen.state is RuntimeState.OFFLINE
        assert not first.running  # waiting out the backoff (10 s)
        rig.advance(11)
        await rig.drain("mc-1")
        assert first.running and observed(rig).state is RuntimeState.RUNNING

    run(tmp_path, scenario)


def test_a_stop_request_stops_and_a_kill_request_kills(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        await rig.drain("mc-1")
        main = rig.fake.named(MAIN)
        assert main is not None
        rig.desired.put(spec(power="stopped"))
        await rig.drain("mc-1")
        assert not main.running and main.exit_code == 0  # the signal was enough
        assert observed(rig).state is RuntimeState.OFFLINE
        assert observed(rig).crash_count == 0
        rig.desired.put(spec())
        await rig.drain("mc-1")
        assert main.running
        rig.desired.put(spec(power="stopped", kill_requested_at=5.0))
        await rig.drain("mc-1")
        assert main.exit_code == 137
        assert observed(rig).kill_handled == 5.0
        assert await rig.replan("mc-1") == ()

    run(tmp_path, scenario)


def test_a_spec_change_recreates_and_a_limit_change_updates_live(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        await rig.drain("mc-1")
        first = rig.fake.named(MAIN)
        assert first is not None
        rig.desired.put(spec(limits={"memory": 128 * 1024 * 1024, "cpu": 1}))
        await rig.drain("mc-1")
        assert rig.fake.named(MAIN) is first  # same container
        assert first.resources.memory == 128 * 1024 * 1024
        assert first.resources.nano_cpus == 1_000_000_000
        rig.desired.put(
            spec(startup_command="sleep 2000", limits={"memory": 128 * 1024 * 1024, "cpu": 1})
        )
        await rig.drain("mc-1")
        second = rig.fake.named(MAIN)
        assert second is not None and second.id != first.id and second.running
        assert observed(rig).container_id == second.id

    run(tmp_path, scenario)


def test_a_deleted_document_removes_then_forgets(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        await rig.drain("mc-1")
        del rig.desired.specs["mc-1"]
        rig.desired.held.add("mc-1")
        await rig.drain("mc-1")
        assert rig.fake.named(MAIN) is not None  # the guard holds it
        rig.desired.held.clear()
        await rig.drain("mc-1")
        assert rig.fake.named(MAIN) is None
        assert rig.observed.get("mc-1") is None

    run(tmp_path, scenario)


def test_a_seeded_install_outlives_passes_before_its_document_and_is_not_run_again(
    tmp_path: Path,
) -> None:
    """A transfer's target seeds the install record, then writes the document: a pass
    over the key in between (an engine event, a resync) must not forget the record."""

    async def scenario(rig: Rig) -> None:
        rig.fake.installs_run = True
        moved = spec(install_script="echo hi")
        await rig.controller.seed_install(
            "mc-1",
            state=InstallState.READY,
            install_key=install_key(moved),
            image=IMAGE,
            exit_code=0,
        )
        await rig.drain("mc-1")  # no document yet
        assert observed(rig).install_state is InstallState.READY
        rig.desired.put(moved)
        await rig.drain("mc-1")
        assert rig.fake.named(INSTALL) is None  # not installed again
        main = rig.fake.named(MAIN)
        assert main is not None and main.running
        # Once the document came, its deletion forgets the record as ever.
        del rig.desired.specs["mc-1"]
        await rig.drain("mc-1")
        assert rig.observed.get("mc-1") is None

    run(tmp_path, scenario)


def test_a_dropped_seed_is_forgotten(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        await rig.controller.seed_install(
            "mc-1", state=InstallState.READY, install_key="k", image=IMAGE, exit_code=0
        )
        await rig.drain("mc-1")
        assert rig.observed.get("mc-1") is not None
        assert await rig.controller.drop_seed("mc-1")
        await rig.drain("mc-1")
        assert rig.observed.get("mc-1") is None

    run(tmp_path, scenario)


def test_an_admission_refusal_is_reported_then_lifted(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        refusal = "Invalid port binding: port not in network pool"
        rig.refusals["mc-1"] = refusal
        rig.desired.put(spec())
        await rig.drain("mc-1")
        assert observed(rig).blocked_reason == refusal
        assert rig.fake.named(MAIN) is None
        del rig.refusals["mc-1"]
        await rig.drain("mc-1")
        assert observed(rig).blocked_reason is None and observed(rig).last_error is None
        assert observed(rig).state is RuntimeState.RUNNING

    run(tmp_path, scenario)


def test_a_start_pattern_holds_starting_until_the_console_matches(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec(start_pattern="Done \\("))
        await rig.drain("mc-1")
        assert observed(rig).state is RuntimeState.STARTING
        rig.fake.write_output(MAIN, "Loading\nDone (1.2s)! For help, type help")
        for _ in range(100):
            if observed(rig).state is RuntimeState.RUNNING:
                break
            await asyncio.sleep(0.01)
        assert observed(rig).state is RuntimeState.RUNNING
        assert await rig.replan("mc-1") == ()

    run(tmp_path, scenario)


def test_the_engine_going_away_and_coming_back(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        await rig.drain("mc-1")
        await rig.controller.start()  # workers, resync and the engine event thread
        try:
            await asyncio.wait_for(rig.controller.first_sync_done.wait(), 5)
            rig.fake.go_away()
            for _ in range(200):
                if not observed(rig).engine_available:
                    break
                await asyncio.sleep(0.01)
            assert not rig.controller.engine_up
            assert not observed(rig).engine_available
            main = rig.fake.named(MAIN)
            assert main is not None and main.running  # nothing was touched meanwhile
            rig.fake.come_back()
            for _ in range(300):
                if observed(rig).engine_available and rig.controller.engine_up:
                    break
                await asyncio.sleep(0.01)
            assert rig.controller.engine_up
            assert observed(rig).engine_available
            assert observed(rig).state is RuntimeState.RUNNING
            assert rig.fake.named(MAIN) is main  # a healthy container is never restarted
            assert main.started_at == rig.clock.now
        finally:
            await rig.controller.stop()

    run(tmp_path, scenario)


def test_a_list_stands_in_for_each_keys_two_inspects() -> None:
    """seen_of: main and install per key, a node-scoped copy counts, none for a key
    without containers, and a key with two of one role or a renamed one is left out."""
    from lightd.engine.records import ActualContainer
    from lightd.reconcile.controller import seen_of

    def container(key: str, role: str, name: str) -> ActualContainer:
        return ActualContainer(
            id=f"id-{name}", name=name, managed=True, internal_id=key, role=role,
            spec_hash=None, running=True, status="running", exit_code=None,
            started_at=None, finished_at=None, memory=None, memory_swap=None,
            nano_cpus=None, pids_limit=None,
        )  # fmt: skip

    managed = [
        container("a", "main", "lightd-a"),
        container("a", "install", "lightd-a-install"),
        container("b", "main", "lightd-b.n-node1"),
        container("c", "main", "lightd-c"),
        container("c", "main", "lightd-c.n-node1"),
        container("d", "main", "renamed"),
    ]
    seen = seen_of({"a", "b", "c", "d", "e"}, managed)
    assert set(seen) == {"a", "b", "e"}
    assert seen["a"].main is not None and seen["a"].main.name == "lightd-a"
    assert seen["a"].install is not None and seen["a"].install.name == "lightd-a-install"
    assert seen["b"].main is not None and seen["b"].install is None
    assert seen["e"].main is None and seen["e"].install is None


def test_a_key_known_to_have_no_install_container_is_looked_at_by_its_main_only(
    tmp_path: Path,
) -> None:
    """After the first look found no install container, the passes that follow (the
    one after a start above all) inspect the main container only, until an engine event
    about an install container of the key (or of no known role) arrives."""

    def install_inspects(rig: Rig) -> int:
        return rig.fake.calls.count(("inspect", INSTALL))

    async def scenario(rig: Rig) -> None:
        rig.desired.put(spec())
        assert set(await rig.drain("mc-1")) == {"converged"}
        assert observed(rig).state is RuntimeState.RUNNING
        assert install_inspects(rig) == 1  # the first look only
        main_inspects = rig.fake.calls.count(("inspect", MAIN))
        assert main_inspects >= 2  # the first look and the pass after the start
        assert (await rig.controller.observe("mc-1")).install is None
        assert install_inspects(rig) == 1
        rig.controller._engine_noted("mc-1", False)  # an event about the main: still known
        await rig.controller.observe("mc-1")
        assert install_inspects(rig) == 1
        rig.controller._engine_noted("mc-1", True)  # one about an install container
        await rig.controller.observe("mc-1")
        assert install_inspects(rig) == 2

    run(tmp_path, scenario)


def test_an_install_step_makes_the_next_look_inspect_the_install_container(
    tmp_path: Path,
) -> None:
    async def scenario(rig: Rig) -> None:
        rig.fake.installs_run = True
        rig.desired.put(spec(install_script="echo hi"))
        await rig.drain("mc-1")
        install = rig.fake.named(INSTALL)
        assert install is not None and install.running
        seen = await rig.controller.observe("mc-1")
        assert seen.install is not None and seen.install.id == install.id

    run(tmp_path, scenario)


def test_a_resync_under_the_same_open_stream_lists_once_and_inspects_nothing(
    tmp_path: Path,
) -> None:
    """With the event stream open since each key's last look, a resync is one brief
    list call: keys whose containers it shows as last seen keep that look (no inspect);
    a container that changed without an event (a lost event) is inspected by its pass."""

    def inspects(rig: Rig) -> int:
        return sum(1 for kind, _ in rig.fake.calls if kind == "inspect")

    async def work_queue(rig: Rig) -> None:
        while len(rig.queue):
            got = await rig.queue.get()
            assert got is not None
            try:
                await rig.controller.work(got)
            finally:
                rig.queue.done(got)

    async def scenario(rig: Rig) -> None:
        rig.controller._engine_back()  # the event stream is open (no thread in the rig)
        rig.desired.put(spec())
        await rig.drain("mc-1")
        assert observed(rig).state is RuntimeState.RUNNING
        before = list(rig.fake.calls)
        await rig.controller.resync()
        await work_queue(rig)
        new = rig.fake.calls[len(before) :]
        assert [kind for kind, _ in new] == ["list_brief"]
        assert observed(rig).state is RuntimeState.RUNNING

        main = rig.fake.named(MAIN)
        assert main is not None
        main.running = False  # stopped behind lightd's back, and the event was lost
        main.exit_code = 0
        before = list(rig.fake.calls)
        await rig.controller.resync()
        await work_queue(rig)
        # (the console follower's calls of the first start may land in between: not looks)
        kinds = [kind for kind, _ in rig.fake.calls[len(before) :] if kind != "follow_output"]
        assert kinds[:2] == ["list_brief", "inspect"]  # the list disagreed: looked again
        assert observed(rig).state is RuntimeState.OFFLINE  # the exit was seen: a crash
        assert observed(rig).crash_count == 1

        rig.controller._engine_lost()  # a new stream: the looks are not trusted
        rig.controller._engine_back()
        before = list(rig.fake.calls)
        await rig.controller.resync()
        kinds = [kind for kind, _ in rig.fake.calls[len(before) :]]
        assert "list_managed" in kinds and "list_brief" not in kinds

    run(tmp_path, scenario)


def test_a_brief_list_confirms_only_looks_it_shows_unchanged() -> None:
    """confirmed: same containers in the same run state (or none both times) keep the
    look; another id, another run state, a new or a missing container do not."""
    from lightd.engine.records import Actual, ActualContainer, BriefContainer
    from lightd.reconcile.controller import confirmed

    def full(key: str, role: str, *, cid: str = "", running: bool = True) -> ActualContainer:
        name = container_name(key, Role(role))
        return ActualContainer(
            id=cid or f"id-{name}", name=name, managed=True, internal_id=key, role=role,
            spec_hash="h", running=running, status="running", exit_code=None,
            started_at=None, finished_at=None, memory=None, memory_swap=None,
            nano_cpus=None, pids_limit=None,
        )  # fmt: skip

    def brief(key: str, role: str, *, cid: str = "", running: bool = True) -> BriefContainer:
        name = container_name(key, Role(role))
        return BriefContainer(
            id=cid or f"id-{name}", name=name, internal_id=key, role=role, spec_hash="h",
            running=running,
        )  # fmt: skip

    looks = {
        "same": Actual(main=full("same", "main"), install=None),
        "none": Actual(main=None, install=None),
        "stopped": Actual(main=full("stopped", "main"), install=None),
        "replaced": Actual(main=full("replaced", "main"), install=None),
        "gone": Actual(main=full("gone", "main"), install=None),
        "installing": Actual(main=None, install=None),
    }
    listed = [
        brief("same", "main"),
        brief("stopped", "main", running=False),
        brief("replaced", "main", cid="another"),
        brief("installing", "install"),
        brief("unlooked", "main"),
    ]
    seen = confirmed({*looks, "unlooked"}, listed, looks)
    assert set(seen) == {"same", "none"}
    assert seen["same"] is looks["same"]


def test_a_start_event_of_the_run_already_seen_asks_for_no_pass(tmp_path: Path) -> None:
    """A main container's ``start`` event that arrives after the pass that looked at the
    started container (late, under load) hints nothing; one of a run not seen (another
    container, a later start, an earlier run's late event, a look not under the open
    stream) hints the key."""

    async def scenario(rig: Rig) -> None:
        rig.controller._engine_back()  # the event stream is open (no thread in the rig)
        rig.desired.put(spec())
        await rig.drain("mc-1")
        main = rig.fake.named(MAIN)
        assert main is not None and main.running and main.started_at is not None
        assert len(rig.queue) == 0
        at = main.started_at
        rig.controller._engine_started("mc-1", main.id, at)
        assert len(rig.queue) == 0  # the look already saw this run
        rig.controller._engine_started("mc-1", main.id, at + 0.2)
        assert len(rig.queue) == 0  # stamped just after its StartedAt: still this run
        for container_id, when in (
            ("another", at),  # another container of the key
            (main.id, at - 60),  # an earlier run's late event
            (main.id, at + 600),  # a later start than the run seen
            (main.id, None),  # no time on the event
        ):
            rig.controller._engine_started("mc-1", container_id, when)
            assert len(rig.queue) == 1, (container_id, when)
            assert await rig.drain("mc-1") == ["converged"]
        rig.controller._engine_lost()  # a new stream: the looks are not trusted
        rig.controller._engine_back()
        rig.controller._engine_started("mc-1", main.id, at)
        assert len(rig.queue) == 1

    run(tmp_path, scenario)
