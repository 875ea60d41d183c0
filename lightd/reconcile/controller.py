"""The controller: workers that converge one container key at a time.

Hints (the ingest path, Docker's event stream, console callbacks, a periodic resync)
only put keys into the workqueue; a worker re-reads desired, observed and actual state,
computes the gates (deletion held, admission refusal, the desired revision), asks the
pure planner for the next step, and hands each action to the executor; after a step
that changed the engine the key goes back in the queue, until a pass plans nothing.
The controller is the one writer of observed state: it applies the typed patches the
executor and the planner produce. Errors are classified here: transient ones retry with
backoff per key; an invalid spec or a conflict is reported and waits for the spec to
change. It must not serve HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lightd.engine.base import Engine
from lightd.engine.records import (
    LABEL_ROLE,
    Actual,
    ActualContainer,
    BriefContainer,
    Role,
    Stream,
    container_name,
)
from lightd.errors import (
    EngineConflict,
    EngineError,
    EngineUnavailable,
    IllegalTransition,
    LightdError,
    SpecInvalid,
)
from lightd.metrics import Metrics
from lightd.reconcile.actions import Action, StartInstall
from lightd.reconcile.executor import ApplyDisk, Executor, Outcome, no_disk
from lightd.reconcile.planner import Gates, Policy, gate, plan, settle
from lightd.reconcile.workqueue import Backoff, WorkQueue
from lightd.runtime.console import ConsoleHub
from lightd.spec.container import ContainerSpec, Power
from lightd.spec.observed import InstallState, ObservedPatch, RuntimeState
from lightd.store.observed import ObservedStore

log = logging.getLogger("lightd.reconcile")

MAX_STEPS = 25
AGAIN = 0.0  # requeue at once (after the keys already waiting)
# Engine events that cannot mean drift (lightd's own create, console attach, ...).
NOTHING_SEEN = Actual(main=None, install=None)  # the engine not looked at (gated)
NOTHING_THERE = Actual(main=None, install=None)  # known without a look: no container
# How long a resync waits for the engine's event stream to be open before it lists: a
# look taken while the stream is open can stand in for each key's first inspect.
STREAM_WAIT_SECONDS = 1.0
# A start event matches a look's run when stamped this close after the run's StartedAt
# (the engine stamps both within one start call), allowing for the seconds' rounding.
START_SLACK_SECONDS = 0.001
START_MATCH_SECONDS = 5.0
QUIET_EVENTS = frozenset(
    {"create", "attach", "detach", "resize", "top", "export", "commit", "copy", "archive-path"}
)


class DesiredReader(Protocol):
    """What the controller reads of the desired side (``DesiredContainers`` in the daemon)."""

    def get(self, internal_id: str) -> ContainerSpec | None: ...
    def ids(self) -> list[str]: ...
    def digest(self, internal_id: str) -> str | None: ...
    def deletion_held(self, internal_id: str) -> bool: ...


@dataclass(frozen=True)
class ControllerSettings:
    workers: int = 8
    resync_seconds: float = 60.0
    policy: Policy = field(default_factory=Policy)
    backoff: Backoff = field(default_factory=Backoff)


class Controller:
    def __init__(
        self,
        *,
        engine: Engine,
        desired: DesiredReader,
        observed: ObservedStore,
        consoles: ConsoleHub,
        volume_path: Callable[[str], str | None],
        data_dir: Path,
        settings: ControllerSettings,
        metrics: Metrics | None = None,
        admit: Callable[[ContainerSpec], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        disk_state: Callable[[str], tuple[int | None, str | None]] | None = None,
        apply_disk: ApplyDisk = no_disk,
    ) -> None:
        # (limit, why it is over or None) of a volume, from memory (no I/O).
        self._disk_state = disk_state or (lambda _ref: (None, None))
        self._clock = clock
        self._metrics = metrics
        # Host checks a document must pass before it is applied (the pool's ports).
        self._admit: Callable[[ContainerSpec], str | None] = admit or (lambda _spec: None)
        self._refusals: set[str] = set()
        # Keys kept stopped whatever their power (a restore of their volume runs).
        self._kept_stopped: set[str] = set()  # volumes being restored (lightd.backups)
        # Keys whose install was seeded before their document exists (a transfer's
        # target): held, not forgotten, until the document comes or the seed is dropped.
        self._seeded: set[str] = set()
        self._engine = engine
        self.desired = desired
        self.observed = observed
        self.consoles = consoles
        self._volume_path = volume_path
        self._settings = settings
        self._interrupts: dict[str, asyncio.Event] = {}
        self._passes: dict[str, int] = {}  # engine-changing passes in a row, per key
        self.executor = Executor(
            engine=engine,
            observed=observed,
            consoles=consoles,
            policy=settings.policy,
            data_dir=data_dir,
            interrupted=self._interrupt_event,
            clock=clock,
            apply_disk=apply_disk,
        )
        self.queue: WorkQueue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._events_stop = threading.Event()
        self._events_stream: Stream[object] | None = None
        self._engine_up = True
        self.first_sync_done = asyncio.Event()
        # The last resync's look at the engine, per key, each used once by the key's next
        # pass instead of two inspects. Trusted only while the event stream that was open
        # before the list stays open; an engine event about a key drops its entry.
        self._seen: dict[str, Actual] = {}
        self._stream_open = asyncio.Event()
        self._stream_generation = 0
        self._event_serial = 0
        self._last_event: dict[str, int] = {}
        # The keys the trusted list found on the engine, and the event serial when it
        # was taken: a key outside it, without an event since and never looked at by this
        # process, has no container (every create sends an event) and is not inspected.
        self._listed: frozenset[str] | None = None
        self._listed_serial = 0
        self._looked: set[str] = set()
        # Keys whose install container this process knows to be absent: seen absent by
        # the key's last look, no install step since, and no engine event about an
        # install container of the key since that look (every create sends one). Their
        # next look inspects the main container only (a start's follow-up pass is one
        # engine call, not two).
        self._no_install: set[str] = set()
        self._install_event: dict[str, int] = {}
        # Each key's last look at the engine: (what was seen, the event serial and the
        # stream generation then). A resync under the same open stream checks these
        # against one list call instead of inspecting every container again.
        self._looks: dict[str, tuple[Actual, int, int]] = {}

    # -- hints -----------------------------------------------------------------

    @property
    def settings(self) -> ControllerSettings:
        return self._settings

    @property
    def policy(self) -> Policy:
        return self._settings.policy

    def _interrupt_event(self, key: str) -> asyncio.Event:
        event = self._interrupts.get(key)
        if event is None:
            event = self._interrupts[key] = asyncio.Event()
        return event

    async def seed_install(
        self,
        key: str,
        *,
        state: InstallState,
        install_key: str | None,
        image: str | None,
        exit_code: int | None,
    ) -> None:
        """Record an install done elsewhere (a transfer's source) before the document exists,
        so a transferred-in container is not installed again over its copied volume.

        Until the document is written (or :meth:`drop_seed`), a pass over ``key`` holds
        the record as the deletion guard would: an engine event or a resync in between
        must not forget it, or the copy would be installed again."""
        self._seeded.add(key)
        await self.observed.patch(
            key,
            ObservedPatch(
                install_state=state,
                install_key=install_key,
                install_image=image,
                install_exit_code=exit_code,
            ),
        )

    async def drop_seed(self, key: str) -> bool:
        """End :meth:`seed_install`'s hold; True when a seeded record was forgotten.

        A record with no document and no main container recorded (a seed whose document
        was never written, maybe before a restart) is forgotten at once: nothing on the
        engine was made for it, and no pass would forget it while the deletion guard
        counts it as a container lightd had (a new node's missing desired folder).
        """
        self._seeded.discard(key)
        found = self.observed.get(key)
        stale = (
            self.desired.get(key) is None
            and found is not None
            and found.container_id is None
            and found.install_state is InstallState.READY
        )
        if stale:
            await self.observed.forget(key)
        self.hint(key)
        return stale

    def keep_stopped(self, key: str) -> None:
        """Converge ``key`` as if its power were ``stopped`` until :meth:`let_run`."""
        self._kept_stopped.add(key)
        self.hint(key)

    def let_run(self, key: str) -> None:
        """End :meth:`keep_stopped`: the document's own power applies again."""
        self._kept_stopped.discard(key)
        self.hint(key)

    def hint(self, key: str) -> None:
        """Ask for ``key`` to be reconciled (collapses with pending hints)."""
        self._interrupt_event(key).set()
        if self.queue is not None:
            self.queue.add(key)

    def on_console_match(self, key: str, container_id: str) -> None:
        observed = self.observed.get(key)
        if observed is None or observed.container_id != container_id:
            return
        if observed.state is RuntimeState.STARTING:
            self._spawn(self._mark_running(key))

    async def _mark_running(self, key: str) -> None:
        try:
            await self.observed.patch(
                key,
                ObservedPatch(
                    state=RuntimeState.RUNNING, expect=frozenset({RuntimeState.STARTING})
                ),
            )
        except IllegalTransition as exc:  # stopped meanwhile: the match is stale
            log.debug("%s: start pattern match ignored: %s", key, exc.message)

    def retry_refused(self) -> None:
        """The pool changed: look again at containers whose ports it refused."""
        for observed in self.observed.all():
            if observed.blocked_reason in self._refusals:
                self.hint(observed.internal_id)

    def on_console_end(self, key: str) -> None:
        self.hint(key)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.consoles.bind_loop(loop)
        self.queue = WorkQueue(self._settings.backoff)
        # The desired folder was read by the daemon's ingest (with the deletion guard)
        # before the controller starts; reading it here would bypass the guard. The
        # daemon has loaded observed state before that scan: not read twice.
        if not self.observed.loaded:
            await asyncio.to_thread(self.observed.load)
        for index in range(self._settings.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"reconcile-{index}"))
        self._tasks.append(asyncio.create_task(self._resync_loop(), name="resync"))
        threading.Thread(
            target=self._watch_events, args=(loop,), name="engine-events", daemon=True
        ).start()

    async def stop(self) -> None:
        self._events_stop.set()
        stream = self._events_stream
        if stream is not None:
            with contextlib.suppress(Exception):  # the stream may already be dead
                stream.close()
        if self.queue is not None:
            await self.queue.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.consoles.stop_all()

    async def resync(self) -> None:
        """Hint every key lightd knows of: desired, observed and labelled containers.

        The list (one inspect per container) also stands in for each key's first look
        in its next pass, when the event stream was open all along (see :func:`seen_of`).
        Once this process has looked at the keys under the stream that is still open,
        the list is one call without inspects: a key whose containers it shows as they
        were last seen (:func:`confirmed`) keeps that look; the others are inspected by
        their pass. The work of an idle resync is then one engine call, not one a
        container.
        """
        if self._engine_up and not self._stream_open.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stream_open.wait(), STREAM_WAIT_SECONDS)
        generation = self._stream_generation if self._stream_open.is_set() else None
        serial = self._event_serial
        keys = set(self.desired.ids()) | {o.internal_id for o in self.observed.all()}
        if generation is not None and any(g == generation for _, _, g in self._looks.values()):
            try:
                brief = await self._engine.list_brief()
                self._set_engine_up(True)
            except EngineError as exc:
                log.warning("resync could not list containers: %s", exc.message)
                self._set_engine_up(False)
            else:
                keys |= {c.internal_id for c in brief if c.internal_id}
                if generation == self._stream_generation:
                    fresh = {
                        key: look[0]
                        for key, look in self._looks.items()
                        if look[2] == generation
                        and look[1] >= self._last_event.get(key, 0)
                        and self._last_event.get(key, 0) <= serial
                    }
                    self._seen = confirmed(keys, brief, fresh)
                    self._listed = frozenset(c.internal_id for c in brief if c.internal_id)
                    self._listed_serial = serial
            for key in sorted(keys):
                self.hint(key)
            return
        try:
            managed = await self._engine.list_managed()
            keys |= {c.internal_id for c in managed if c.internal_id}
            self._set_engine_up(True)
        except EngineError as exc:
            log.warning("resync could not list containers: %s", exc.message)
            self._set_engine_up(False)
            managed = None
        if managed is not None and generation == self._stream_generation:
            moved = {key for key, at in self._last_event.items() if at > serial}
            self._seen = seen_of(keys - moved, managed)
            self._listed = frozenset(c.internal_id for c in managed if c.internal_id)
            self._listed_serial = serial
        for key in sorted(keys):
            self.hint(key)

    async def _resync_loop(self) -> None:
        first = True
        while True:
            await self.resync()
            if first:
                first = False
                self._spawn(self._mark_first_sync())
            await asyncio.sleep(self._settings.resync_seconds)

    async def _mark_first_sync(self) -> None:
        assert self.queue is not None
        while not self.queue.idle():  # noqa: ASYNC110 (a one-off wait at start)
            await asyncio.sleep(0.1)
        self.first_sync_done.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- engine events ---------------------------------------------------------

    def _watch_events(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = 0.5
        while not self._events_stop.is_set():
            try:
                stream = self._engine.events()
                self._events_stream = stream
                loop.call_soon_threadsafe(self._engine_back)
                delay = 0.5
                for event in stream:
                    if self._events_stop.is_set():
                        return
                    action = event.action
                    key = event.internal_id
                    if not key:
                        continue
                    role = event.attributes.get(LABEL_ROLE)
                    install = role is None or role == Role.INSTALL.value
                    if action in QUIET_EVENTS or action.startswith("exec_"):
                        loop.call_soon_threadsafe(self._engine_noted, key, install)
                    elif action == "start" and not install:
                        loop.call_soon_threadsafe(
                            self._engine_started, key, event.container_id, event.at
                        )
                    else:
                        loop.call_soon_threadsafe(self._engine_hint, key, install)
            except Exception as exc:
                if self._events_stop.is_set():
                    return
                log.debug("engine event stream failed: %s", exc)
            if self._events_stop.is_set():
                return
            loop.call_soon_threadsafe(self._engine_lost)
            self._events_stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _set_engine_up(self, up: bool) -> None:
        if up == self._engine_up:
            return
        self._engine_up = up
        if up:
            log.info("docker engine is back: resyncing")
        else:
            log.warning("docker engine unavailable")

    def _engine_noted(self, key: str, install: bool = True) -> None:
        """An engine event about ``key`` (any): the resync's look at it is stale; one
        about its install container (or of no known role) also ends :attr:`_no_install`."""
        self._event_serial += 1
        self._last_event[key] = self._event_serial
        self._seen.pop(key, None)
        if install:
            self._install_event[key] = self._event_serial
            self._no_install.discard(key)

    def _engine_started(self, key: str, container_id: str | None, at: float | None) -> None:
        """A main container's ``start`` event: nothing to do when the key's last look,
        under the stream still open, already saw that run (the same container running,
        started no later than the event: the engine stamps a run's start before it sends
        its event, and an earlier run's event is older than the run seen). Else a hint.
        A later die or start of the container sends its own event after this one."""
        look = self._looks.get(key)
        if look is not None and container_id is not None and at is not None:
            actual, _serial, generation = look
            main = actual.main
            if (
                self._stream_open.is_set()
                and generation == self._stream_generation
                and main is not None
                and main.running
                and main.id == container_id
                and main.started_at is not None
                and main.started_at <= at + START_SLACK_SECONDS
                and at - main.started_at < START_MATCH_SECONDS
            ):
                # Not noted either (deliberately): the look that saw this run stays
                # valid, so the event must not bump the key's serial or drop its
                # resync entry, or the next pass would inspect again for nothing.
                return
        self._engine_hint(key, install=False)

    def _engine_hint(self, key: str, install: bool = True) -> None:
        self._engine_noted(key, install)
        self.hint(key)

    def _engine_lost(self) -> None:
        self._stream_generation += 1
        self._stream_open.clear()
        self._seen.clear()
        self._listed = None
        self._no_install.clear()
        if not self._engine_up:
            return
        self._set_engine_up(False)
        self._spawn(self._mark_engine_unavailable())

    async def _mark_engine_unavailable(self) -> None:
        for observed in self.observed.all():
            await self.observed.patch(observed.internal_id, ObservedPatch(engine_available=False))

    def _engine_back(self) -> None:
        self._stream_generation += 1
        self._stream_open.set()
        was_down = not self._engine_up
        self._set_engine_up(True)
        if was_down:
            self._spawn(self.resync())

    @property
    def engine_up(self) -> bool:
        return self._engine_up

    # -- workers ---------------------------------------------------------------

    async def _worker(self) -> None:
        assert self.queue is not None
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self.work(key)
            finally:
                self.queue.done(key)

    async def work(self, key: str) -> str:
        """One worker pass over ``key``, errors classified; returns the outcome label."""
        started = time.perf_counter()
        outcome = "error"
        try:
            outcome = await self._reconcile_classified(key)
        finally:
            if self._metrics is not None:
                self._metrics.reconciles.labels(outcome=outcome).inc()
                self._metrics.reconcile_seconds.labels(outcome=outcome).observe(
                    time.perf_counter() - started
                )
        return outcome

    async def _reconcile_classified(self, key: str) -> str:
        assert self.queue is not None
        try:
            requeue = await self.reconcile(key)
        except SpecInvalid as exc:
            await self._block(key, exc.message)
            self.queue.forget(key)
            return "invalid_spec"
        except IllegalTransition:
            delay = self.queue.retry(key)
            log.exception("%s: reconcile failed (retry in %.1fs)", key, delay)
            return "error"
        except EngineConflict as exc:
            message = f"Conflict: {exc.message}"
            await self.observed.patch(key, ObservedPatch(last_error=message))
            delay = self.queue.retry(key)
            log.warning("%s: %s (retry in %.1fs)", key, message, delay)
            return "conflict"
        except EngineUnavailable as exc:
            self._set_engine_up(False)
            delay = self.queue.retry(key)
            log.warning("%s: %s (retry in %.1fs)", key, exc.message, delay)
            return "transient"
        except LightdError as exc:
            if self.observed.get(key) is not None or self.desired.get(key) is not None:
                await self.observed.patch(key, ObservedPatch(last_error=exc.message))
            delay = self.queue.retry(key)
            log.warning("%s: %s (retry in %.1fs)", key, exc.message, delay)
            return "error"
        except Exception:
            delay = self.queue.retry(key)
            log.exception("%s: reconcile failed (retry in %.1fs)", key, delay)
            return "error"
        self.queue.forget(key)
        if requeue == AGAIN:
            self.queue.add(key)
        elif requeue is not None:
            self.queue.add_after(key, requeue)
        return "converged"

    async def _block(self, key: str, message: str) -> None:
        revision = self.desired.digest(key)
        log.warning("%s: %s (waiting for the spec to change)", key, message)
        await self.observed.patch(
            key,
            ObservedPatch(blocked_reason=message, blocked_revision=revision, last_error=message),
        )

    async def observe(self, key: str) -> Actual:
        if key in self._no_install:
            main = await self._engine.inspect(container_name(key, Role.MAIN))
            return Actual(main=main, install=None)
        main, install = await asyncio.gather(
            self._engine.inspect(container_name(key, Role.MAIN)),
            self._engine.inspect(container_name(key, Role.INSTALL)),
        )
        return Actual(main=main, install=install)

    def _note_install(self, key: str, actual: Actual, since_serial: int) -> None:
        """Remember (or forget) that ``key`` has no install container, from a look
        taken when the event serial was ``since_serial``."""
        if actual.install is None and self._install_event.get(key, 0) <= since_serial:
            self._no_install.add(key)
        else:
            self._no_install.discard(key)

    async def reconcile(self, key: str) -> float | None:
        """Converge one container; returns seconds after which to look again, if any."""
        actual: Actual | None = None  # looked at once per pass: record-only steps keep it
        for _step in range(MAX_STEPS):
            desired = self.desired.get(key)
            if desired is not None:
                self._seeded.discard(key)  # the seeded record is the document's now
            if desired is not None and key in self._kept_stopped:
                desired = desired.model_copy(update={"power": Power.STOPPED})
            observed = self.observed.get(key)
            gates = self.gates(key, desired)
            volume_path = self._volume_path(desired.volume_id) if desired is not None else None
            gated = gate(desired=desired, observed=observed, gates=gates)
            if gated is not None:
                if gated.actions:
                    log.warning("%s: %s", key, gated.actions[0].reason)
                await self._apply_all(key, gated.actions, desired, NOTHING_SEEN, volume_path)
                return None
            if actual is None:
                serial = self._event_serial
                generation = self._stream_generation if self._stream_open.is_set() else -1
                actual = self._first_look(key) or await self.observe(key)
                self._looked.add(key)
                self._looks[key] = (actual, serial, generation)
                self._note_install(key, actual, serial)
            step = plan(
                desired=desired,
                observed=observed,
                actual=actual,
                volume_path=volume_path,
                now=self._clock(),
                policy=self._settings.policy,
                gates=gates,
            )
            if step.empty:
                self._passes.pop(key, None)
                await self._settle(key, desired, actual, gates.revision)
                return step.requeue_after
            if any(isinstance(action, StartInstall) for action in step.actions):
                self._no_install.discard(key)  # the one step that makes an install container
            await self._apply_all(key, step.actions, desired, actual, volume_path)
            if any(action.engine_changing for action in step.actions):
                # The engine changed: look again in a later pass, behind the keys that
                # wait now (the event the change causes collapses into that pass).
                return self._again(key)
        return self._again(key)

    def _first_look(self, key: str) -> Actual | None:
        """What the engine has of ``key`` without asking it, when that is known: the
        resync's look (once), or nothing for a key the trusted list did not have."""
        seen = self._seen.pop(key, None)
        if seen is not None:
            return seen
        listed = self._listed
        if (
            listed is None
            or key in listed
            or key in self._looked
            or not self._stream_open.is_set()
            or self._last_event.get(key, 0) > self._listed_serial
        ):
            return None
        return NOTHING_THERE

    def gates(self, key: str, desired: ContainerSpec | None) -> Gates:
        """What the planner cannot find out itself: the guard, admission, the revision."""
        refusal = self._admit(desired) if desired is not None else None
        if refusal is not None:
            self._refusals.add(refusal)
        console = self.consoles.watching(key)
        limit, over = self._disk_state(desired.volume_id) if desired is not None else (None, None)
        return Gates(
            disk_limit=limit,
            disk_over=over,
            held=desired is None and (key in self._seeded or self.desired.deletion_held(key)),
            refusal=refusal,
            known_refusals=frozenset(self._refusals),
            revision=self.desired.digest(key),
            console_matched=console is not None and console.matched,
        )

    async def _apply_all(
        self,
        key: str,
        actions: tuple[Action, ...],
        desired: ContainerSpec | None,
        actual: Actual,
        volume_path: str | None,
    ) -> None:
        async def report(patch: ObservedPatch) -> None:
            await self.observed.patch(key, patch)

        for action in actions:
            if self._metrics is not None:
                self._metrics.actions.labels(kind=action.kind).inc()
            outcome = await self.executor.apply(
                action,
                internal_id=key,
                desired=desired,
                actual=actual,
                volume_path=volume_path,
                report=report,
            )
            await self._record(key, outcome)

    async def _record(self, key: str, outcome: Outcome) -> None:
        """Apply what one action changed (the one place observed state is written)."""
        if outcome.forget:
            self._looks.pop(key, None)
            await self.observed.forget(key)
            return
        if outcome.patch is not None:
            await self.observed.patch(key, outcome.patch)
        if outcome.console is not None:
            run = outcome.console
            self.consoles.new_run(
                key, container_id=run.container_id, since=run.since, pattern=run.pattern
            )

    def _again(self, key: str) -> float:
        """Requeue at once, unless ``key`` has gone :data:`MAX_STEPS` passes unsettled."""
        passes = self._passes.get(key, 0) + 1
        self._passes[key] = passes
        if passes < MAX_STEPS:
            return AGAIN
        self._passes.pop(key, None)
        log.warning("%s: not converged after %d steps; will look again", key, MAX_STEPS)
        return 1.0

    async def _settle(
        self, key: str, desired: ContainerSpec | None, actual: Actual, revision: str | None
    ) -> None:
        observed = self.observed.get(key)
        if observed is None or desired is None:
            return
        main = actual.main
        if main is not None and main.running and observed.state is not RuntimeState.OFFLINE:
            self.consoles.ensure(
                key, container_id=main.id, started_at=main.started_at, pattern=desired.start_pattern
            )
        patch = settle(desired=desired, observed=observed, actual=actual, revision=revision)
        if patch is not None:
            await self.observed.patch(key, patch)


C = TypeVar("C", ActualContainer, BriefContainer)


def _by_key(listed: list[C]) -> tuple[dict[str, dict[Role, C]], set[str]]:
    """The listed containers by key and role, and the keys whose list is ambiguous (two
    containers of one role, or one renamed by someone): those are inspected by name."""
    found: dict[str, dict[Role, C]] = {}
    doubled: set[str] = set()
    for container in listed:
        key = container.internal_id
        if key is None or container.role not in (Role.MAIN, Role.INSTALL):
            continue
        role = Role(container.role)
        name = container_name(key, role)
        if container.name != name and not container.name.startswith(f"{name}.n-"):
            doubled.add(key)  # renamed by someone: let the inspect by name decide
            continue
        roles = found.setdefault(key, {})
        if role in roles:
            doubled.add(key)
        roles[role] = container
    return found, doubled


def seen_of(keys: set[str], managed: list[ActualContainer]) -> dict[str, Actual]:
    """What two inspects of each key would have found, from one list of this node's
    containers: its plain-named (or node-scoped) main and install containers, none for
    a key without any. A key with two containers of one role is left out (inspected)."""
    found, doubled = _by_key(managed)
    seen = {}
    for key in keys - doubled:
        roles = found.get(key, {})
        seen[key] = Actual(main=roles.get(Role.MAIN), install=roles.get(Role.INSTALL))
    return seen


def confirmed(
    keys: set[str], brief: list[BriefContainer], looks: dict[str, Actual]
) -> dict[str, Actual]:
    """The earlier looks that one brief list of this node's containers confirms: the
    key's main and install containers are the same ones in the same run state (or
    absent both times). A key without a look, or listed otherwise, is left out."""
    found, doubled = _by_key(brief)
    seen = {}
    for key in keys - doubled:
        look = looks.get(key)
        if look is None:
            continue
        roles = found.get(key, {})
        if all(
            _agree(roles.get(role), had)
            for role, had in ((Role.MAIN, look.main), (Role.INSTALL, look.install))
        ):
            seen[key] = look
    return seen


def _agree(listed: BriefContainer | None, had: ActualContainer | None) -> bool:
    if listed is None or had is None:
        return listed is None and had is None
    return listed.agrees(had)
