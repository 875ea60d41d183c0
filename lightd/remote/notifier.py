"""The notifier: observed changes in, ordered and retried HTTP notifications out.

Wiring: :meth:`Notifier.on_change` is an :class:`~lightd.store.observed.ObservedStore`
listener. It turns a change into notifications (:mod:`lightd.remote.events`) and puts
them in the :class:`~lightd.remote.outbox.Outbox` synchronously, so their order is the
order of the changes. A writer task persists the outbox (atomically, through the
DocumentStore) whenever it changed; one sender task per container with something
waiting sends that container's notifications one at a time, oldest first, retrying with
exponential backoff (tenacity; never sooner than a ``Retry-After`` the panel sent) while
the panel is unavailable, so a container's notifications never overtake each other while
different containers go in parallel.
A health task asks ``GET <url>/health`` every ``health_interval_seconds``; when the panel
becomes reachable again, or the remote settings change, waiting senders try at once.

Delivery is at least once: a notification is removed from the outbox after the panel
took it, so a crash between the two sends it again after the restart. On start (and on
enabling) the current observed state is compared with what was last queued, so a change
the outbox missed (a crash between the state write and the outbox write, or changes
while the remote was disabled) is told as its latest state.

It must not log the remote token, block the event loop, touch the engine, or decide
anything about containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from lightd.config import RemoteSettings
from lightd.errors import LightdError
from lightd.remote.client import PanelClient, PanelRefused, PanelUnavailable
from lightd.remote.events import Notification, activity, changes
from lightd.remote.outbox import Entry, Outbox
from lightd.spec.observed import ObservedContainer
from lightd.store import DocumentStore

log = logging.getLogger("lightd.remote")

OUTBOX_DOCUMENT = "remote/outbox.json"
MAX_PARALLEL_SENDS = 8


@dataclass(frozen=True)
class RemoteStatus:
    """The remote's reachability (from the health check) and the outbox size."""

    reachable: bool | None  # None: not checked yet, or the remote is disabled
    last_checked: float | None  # epoch seconds of the last health check
    last_error: str | None  # why the last health check failed
    pending: int  # notifications waiting in the outbox


class Notifier:
    def __init__(
        self,
        store: DocumentStore,
        settings: RemoteSettings,
        *,
        observed: Callable[[], list[ObservedContainer]],
    ) -> None:
        self._store = store
        self._settings = settings
        self._observed = observed
        self.outbox = Outbox(settings.outbox_max)
        # Since start: failed delivery attempts (retried) and notifications the panel refused.
        self.failed_attempts = 0
        self.refused = 0
        self._client: PanelClient | None = None
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every task started, until it ends
        self._health_task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_PARALLEL_SENDS)
        self._running = False
        self._reachable: bool | None = None
        self._last_checked: float | None = None
        self._health_error: str | None = None

    # -- lifecycle -------------------------------------------------------------

    async def load(self) -> None:
        """Read the persisted outbox; a broken document is logged and replaced."""
        try:
            raw = await asyncio.to_thread(self._store.read, OUTBOX_DOCUMENT)
            if raw is not None:
                self.outbox.restore(raw)
        except (LightdError, ValidationError) as exc:
            log.error("panel outbox %s unreadable, starting empty: %s", OUTBOX_DOCUMENT, exc)
        if len(self.outbox):
            log.info("panel outbox holds %d undelivered notifications", len(self.outbox))

    async def start(self) -> None:
        self._running = True
        self._client = PanelClient()
        self._writer_task = self._spawn(self._writer(), "remote-outbox")
        if self._settings.enabled:
            self._activate()

    async def stop(self) -> None:
        self._running = False
        self._deactivate()
        if self._writer_task is not None:
            self._writer_task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._writer_task = None
        await self._persist()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def configure(self, settings: RemoteSettings) -> None:
        """Apply a reloaded ``remote`` section live; the outbox is kept as it is."""
        before = self._settings
        self._settings = settings
        self.outbox.max_entries = settings.outbox_max
        if not self._running:
            return
        if before.enabled and not settings.enabled:
            log.info("panel notifications disabled; %d kept in the outbox", len(self.outbox))
            self._deactivate()
        elif settings.enabled and not before.enabled:
            log.info("panel notifications enabled")
            self._activate()
        elif settings.enabled and (
            before.url != settings.url
            or before.token != settings.token
            or before.health_interval_seconds != settings.health_interval_seconds
        ):
            log.info("panel settings changed; retrying now")
            self._restart_health()
            self._wake_senders()

    def status(self) -> RemoteStatus:
        return RemoteStatus(
            reachable=self._reachable if self._settings.enabled else None,
            last_checked=self._last_checked,
            last_error=self._health_error if self._settings.enabled else None,
            pending=len(self.outbox),
        )

    def _activate(self) -> None:
        self.catch_up()
        self._restart_health()
        for server in self.outbox.servers():
            self._kick(server)

    def _deactivate(self) -> None:
        for task in self._senders.values():
            task.cancel()
        self._senders.clear()
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        self._reachable = None
        self._health_error = None

    # -- changes in ------------------------------------------------------------

    def on_change(self, old: ObservedContainer | None, new: ObservedContainer | None) -> None:
        """ObservedStore listener: queue what the panel must hear (synchronously, in order)."""
        if not self._settings.enabled:
            return
        item = new or old
        if item is not None:
            self._queue(item.internal_id, new)

    def on_activity(self, body: dict[str, str | int | float]) -> None:
        """Queue an activity event (``body["server"]`` names the container) for the panel."""
        self.notify(str(body.get("server", "")), activity(body))

    def notify(self, server: str, notification: Notification) -> None:
        """Queue a notification of another room (SFTP activity, a backup's end)."""
        if not self._settings.enabled:
            return
        self.outbox.add(server, notification)
        self._dirty.set()
        if self._running:
            self._kick(server)

    def catch_up(self) -> None:
        """Queue the difference between what was last queued and the observed state now."""
        if not self._settings.enabled:
            return
        current = {item.internal_id: item for item in self._observed()}
        for server in sorted(set(current) | set(self.outbox.reported)):
            self._queue(server, current.get(server))

    def _queue(self, server: str, now: ObservedContainer | None) -> None:
        found, record = changes(server, self.outbox.reported.get(server), now)
        if record is None:
            self.outbox.reported.pop(server, None)
        elif record != self.outbox.reported.get(server):
            self.outbox.reported[server] = record
        else:
            return
        for notification in found:
            self.outbox.add(server, notification)
        self._dirty.set()
        if found and self._running:
            self._kick(server)

    # -- persistence -----------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._persist()

    async def _persist(self) -> None:
        snapshot = self.outbox.snapshot()
        try:
            await asyncio.to_thread(self._store.write, OUTBOX_DOCUMENT, snapshot)
        except LightdError as exc:
            log.error("cannot persist the panel outbox: %s", exc.message)

    # -- sending ---------------------------------------------------------------

    def _kick(self, server: str) -> None:
        if not self._settings.enabled or server in self._senders:
            return
        task = self._spawn(self._drain(server), f"remote-send-{server}")
        self._senders[server] = task
        task.add_done_callback(lambda done: self._sender_done(server, done))

    def _sender_done(self, server: str, task: asyncio.Task[None]) -> None:
        if self._senders.get(server) is task:
            del self._senders[server]
        if not task.cancelled() and task.exception() is not None:
            log.error("panel sender for %s failed", server, exc_info=task.exception())
            if self._running:  # try again later rather than leave the queue stuck
                asyncio.get_running_loop().call_later(
                    self._settings.retry_max_seconds, self._kick_if_running, server
                )
        elif not task.cancelled() and self._running and self.outbox.head(server) is not None:
            self._kick(server)  # something arrived after the loop saw the queue empty

    def _kick_if_running(self, server: str) -> None:
        if self._running and self.outbox.head(server) is not None:
            self._kick(server)

    async def _drain(self, server: str) -> None:
        while (entry := self.outbox.head(server)) is not None:
            self.outbox.pin(entry)
            try:
                await self._deliver(entry)
            except PanelRefused as exc:
                self.refused += 1
                log.warning(
                    "panel refused notification %d for %s (%s); dropped: %s",
                    entry.seq,
                    server,
                    entry.body.get("status")
                    or entry.body.get("error")
                    or entry.body.get("activity"),
                    exc,
                    extra={"fields": {"server": server, "http_status": exc.status}},
                )
            finally:
                self.outbox.unpin(entry)
            self.outbox.remove(entry)
            self._dirty.set()

    async def _deliver(self, entry: Entry) -> None:
        exponential = wait_exponential(
            multiplier=self._settings.retry_initial_seconds,
            max=self._settings.retry_max_seconds,
        )

        def wait(state: RetryCallState) -> float:
            """The backoff, but never sooner than the panel's ``Retry-After``."""
            delay = float(exponential(state))
            failure = state.outcome.exception() if state.outcome is not None else None
            if isinstance(failure, PanelUnavailable) and failure.retry_after is not None:
                delay = max(delay, failure.retry_after)
            return delay

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(PanelUnavailable),
            wait=wait,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                settings = self._settings
                assert self._client is not None
                async with self._slots:
                    await self._client.post_update(
                        settings.url,
                        settings.token,
                        entry.body,
                        timeout_seconds=settings.timeout_seconds,
                    )

    async def _sleep(self, seconds: float) -> None:
        """Backoff that ends early when the panel comes back or the settings change."""
        wake = self._wake
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)

    def _wake_senders(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    def _log_retry(self, state: RetryCallState) -> None:
        self.failed_attempts += 1
        outcome = state.outcome
        reason = outcome.exception() if outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        level = logging.WARNING if state.attempt_number in (1, 10) else logging.DEBUG
        log.log(
            level,
            "panel unavailable (%s); attempt %d failed, retrying in %.1f s",
            reason,
            state.attempt_number,
            delay,
        )

    # -- health ----------------------------------------------------------------

    def _restart_health(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        self._health_task = self._spawn(self._health_loop(), "remote-health")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _health_loop(self) -> None:
        while True:
            settings = self._settings
            assert self._client is not None
            problem = await self._client.health(
                settings.url, settings.token, timeout_seconds=settings.timeout_seconds
            )
            if settings is not self._settings:
                continue  # reconfigured while asking: ask the new panel
            was = self._reachable
            self._reachable = problem is None
            self._health_error = problem
            self._last_checked = time.time()
            if problem is None and was is not True:
                log.info("panel reachable")
                self._wake_senders()
            elif problem is not None and was is not False:
                log.warning("panel unreachable: %s", problem)
            await asyncio.sleep(settings.health_interval_seconds)
