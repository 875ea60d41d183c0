"""The controller: workers that converge one container key at a time.

Hints (the ingest path, Docker's event stream, console callbacks, a periodic resync)
only put keys into the workqueue; a worker re-reads desired, observed and actual state,
asks the pure planner for the next step, and hands it to the executor; after a step that
changed the engine the key goes back in the queue, until a pass plans nothing. Errors
are classified here: transient ones retry with backoff per key; an invalid spec or a
conflict is reported and waits for the spec to change. It must not serve HTTP.
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
from typing import Any

from lightd.containers.desired import DesiredContainers
from lightd.engine import DockerEngine
from lightd.engine import containers as ops
from lightd.engine.streams import events
from lightd.errors import EngineConflict, EngineError, EngineUnavailable, LightdError
from lightd.metrics import Metrics
from lightd.reconcile.executor import Executor, SpecInvalid
from lightd.reconcile.model import LABEL_INTERNAL_ID, ActionKind, Actual, Role, container_name
from lightd.reconcile.planner import Policy, plan
from lightd.reconcile.state import ObservedStore
from lightd.reconcile.workqueue import Backoff, WorkQueue
from lightd.runtime.console import ConsoleHub
from lightd.spec.container import ContainerSpec, Power
from lightd.spec.observed import RuntimeState

log = logging.getLogger("lightd.reconcile")

MAX_STEPS = 25
AGAIN = 0.0  # requeue at once (after the keys already waiting)
# Engine events that cannot mean drift (lightd's own create, console attach, ...).
QUIET_EVENTS = frozenset(
    {"create", "attach", "detach", "resize", "top", "export", "commit", "copy", "archive-path"}
)
# Actions that only record observations: the engine looks the same after them.
RECORD_ONLY = frozenset(
    {
        ActionKind.SKIP_INSTALL,
        ActionKind.MARK_STATE,
        ActionKind.RECORD_EXIT,
        ActionKind.REPORT_BLOCKED,
    }
)


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
        engine: DockerEngine,
        desired: DesiredContainers,
        observed: ObservedStore,
        consoles: ConsoleHub,
        volume_path: Callable[[str], str | None],
        data_dir: Path,
        node_id: str,
        settings: ControllerSettings,
        metrics: Metrics | None = None,
        admit: Callable[[ContainerSpec], str | None] | None = None,
    ) -> None:
        self._metrics = metrics
        # Host checks a document must pass before it is applied (the pool's ports).
        self._admit: Callable[[ContainerSpec], str | None] = admit or (lambda _spec: None)
        self._refusals: set[str] = set()
        # Keys kept stopped whatever their power (a restore of their volume runs).
        self.held: set[str] = set()
        self._engine = engine
        self._node_id = node_id
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
            node_id=node_id,
            interrupted=self._interrupt_event,
        )
        self.queue: WorkQueue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._events_stop = threading.Event()
        self._events_stream: object | None = None
        self._engine_up = True
        self.first_sync_done = asyncio.Event()

    # -- hints -----------------------------------------------------------------

    def _interrupt_event(self, key: str) -> asyncio.Event:
        event = self._interrupts.get(key)
        if event is None:
            event = self._interrupts[key] = asyncio.Event()
        return event

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
        await self.observed.update(key, state=RuntimeState.RUNNING)

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
        # before the controller starts; reading it here would bypass the guard.
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
                stream.close()  # type: ignore[attr-defined]
        if self.queue is not None:
            await self.queue.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.consoles.stop_all()

    async def resync(self) -> None:
        """Hint every key lightd knows of: desired, observed and labelled containers."""
        keys = set(self.desired.ids()) | {o.internal_id for o in self.observed.all()}
        try:
            managed = await self._engine.run(ops.list_managed, self._engine.client(), self._node_id)
            keys |= {c.internal_id for c in managed if c.internal_id}
            self._set_engine_up(True)
        except EngineError as exc:
            log.warning("resync could not list containers: %s", exc.message)
            self._set_engine_up(False)
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
                stream = events(self._engine.client(), self._node_id)
                self._events_stream = stream
                loop.call_soon_threadsafe(self._engine_back)
                delay = 0.5
                for event in stream:
                    if self._events_stop.is_set():
                        return
                    action = str(event.get("Action") or event.get("status") or "")
                    if action in QUIET_EVENTS or action.startswith("exec_"):
                        continue
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    key = attributes.get(LABEL_INTERNAL_ID)
                    if key:
                        loop.call_soon_threadsafe(self.hint, key)
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

    def _engine_lost(self) -> None:
        if not self._engine_up:
            return
        self._set_engine_up(False)
        self._spawn(self._mark_engine_unavailable())

    async def _mark_engine_unavailable(self) -> None:
        for observed in self.observed.all():
            await self.observed.update(observed.internal_id, engine_available=False)

    def _engine_back(self) -> None:
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
                await self._reconcile_safely(key)
            finally:
                self.queue.done(key)

    async def _reconcile_safely(self, key: str) -> None:
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

    async def _reconcile_classified(self, key: str) -> str:
        assert self.queue is not None
        try:
            requeue = await self.reconcile(key)
        except SpecInvalid as exc:
            await self._block(key, exc.message)
            self.queue.forget(key)
            return "invalid_spec"
        except EngineConflict as exc:
            message = f"Conflict: {exc.message}"
            await self.observed.update(key, last_error=message)
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
                await self.observed.update(key, last_error=exc.message)
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
        await self.observed.update(
            key, blocked_reason=message, blocked_revision=revision, last_error=message
        )

    async def observe(self, key: str) -> Actual:
        client = self._engine.client()
        main, install = await asyncio.gather(
            self._engine.run(
                ops.inspect_named, client, container_name(key, Role.MAIN), self._node_id
            ),
            self._engine.run(
                ops.inspect_named, client, container_name(key, Role.INSTALL), self._node_id
            ),
        )
        return Actual(main=main, install=install)

    async def reconcile(self, key: str) -> float | None:
        """Converge one container; returns seconds after which to look again, if any."""
        actual: Actual | None = None  # looked at once per pass: record-only steps keep it
        for _step in range(MAX_STEPS):
            desired = self.desired.get(key)
            if desired is not None and key in self.held:
                desired = desired.model_copy(update={"power": Power.STOPPED})
            observed = self.observed.get(key)
            revision = self.desired.digest(key)
            if desired is None and self.desired.deletion_held(key):
                # The deletion guard holds it, or its document exists but is invalid.
                return None
            if (
                desired is not None
                and observed is not None
                and observed.blocked_revision is not None
                and observed.blocked_revision == revision
            ):
                return None
            refusal = self._admit(desired) if desired is not None else None
            if refusal is not None:
                # A hand-edited document may name ports the pool does not give it: the
                # container stays as it is until the document or the pool changes.
                self._refusals.add(refusal)
                if observed is None or observed.blocked_reason != refusal:
                    log.warning("%s: %s", key, refusal)
                    await self.observed.update(key, blocked_reason=refusal, last_error=refusal)
                return None
            if observed is not None and observed.blocked_reason in self._refusals:
                await self.observed.update(key, blocked_reason=None, last_error=None)
                observed = self.observed.get(key)
            if actual is None:
                actual = await self.observe(key)
            volume_path = self._volume_path(desired.volume_id) if desired is not None else None
            step = plan(
                desired=desired,
                observed=observed,
                actual=actual,
                volume_path=volume_path,
                now=time.time(),
                policy=self._settings.policy,
            )
            if step.empty:
                self._passes.pop(key, None)
                await self._settle(key, actual, revision)
                return step.requeue_after
            for action in step.actions:
                if self._metrics is not None:
                    self._metrics.actions.labels(kind=action.kind.value).inc()
                await self.executor.apply(
                    action, internal_id=key, desired=desired, actual=actual, volume_path=volume_path
                )
            if not all(action.kind in RECORD_ONLY for action in step.actions):
                # The engine changed: look again in a later pass, behind the keys that
                # wait now (the event the change causes collapses into that pass).
                return self._again(key)
        return self._again(key)

    def _again(self, key: str) -> float:
        """Requeue at once, unless ``key`` has gone :data:`MAX_STEPS` passes unsettled."""
        passes = self._passes.get(key, 0) + 1
        self._passes[key] = passes
        if passes < MAX_STEPS:
            return AGAIN
        self._passes.pop(key, None)
        log.warning("%s: not converged after %d steps; will look again", key, MAX_STEPS)
        return 1.0

    async def _settle(self, key: str, actual: Actual, revision: str | None) -> None:
        observed = self.observed.get(key)
        desired = self.desired.get(key)
        if observed is None or desired is None:
            return
        main = actual.main
        if main is not None and main.running and observed.state is not RuntimeState.OFFLINE:
            self.consoles.ensure(
                key, container_id=main.id, started_at=main.started_at, pattern=desired.start_pattern
            )
        changes: dict[str, object] = {}
        if observed.revision_applied != revision:
            changes["revision_applied"] = revision
        if observed.blocked_revision is not None:
            changes.update(blocked_revision=None, blocked_reason=None)
        if main is not None and observed.container_id != main.id:
            changes["container_id"] = main.id
        if changes:
            await self.observed.update(key, **changes)
