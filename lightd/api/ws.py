"""WebSocket routes: one container's console, stats and state; and the node watch stream.

``/ws/<internal_id>?token=`` takes the master token or a minted one (scoped tokens only
for their container; single-use tokens are consumed at connect); ``/watch?token=`` takes
the master token. Refusals are HTTP answers before the upgrade. Inbound messages are
rate-limited and validated; a bad one gets an ``error`` event and the socket stays open.
Close code 4001 means the token expired. Power actions go through the same desired-state
path as REST. It must not call the engine: console input, history and stats go through the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from quart import Blueprint, Response, websocket

from lightd.api.context import get_daemon
from lightd.api.outbox import Outbox, TokenBucket
from lightd.auth.tokens import Grant
from lightd.daemon import Daemon
from lightd.desired.service import ContainerNotRunning
from lightd.errors import LightdError
from lightd.runtime.console import Batch
from lightd.runtime.events import state_event
from lightd.spec.ids import is_internal_id
from lightd.spec.observed import ObservedContainer, RuntimeState

log = logging.getLogger("lightd.ws")

blueprint = Blueprint("ws", __name__)

CLOSE_TOKEN_EXPIRED = 4001
MAX_COMMAND_CHARS = 4096
POWER_ACTIONS = ("start", "stop", "kill", "restart")


def refuse(status: int, message: str) -> Response:
    return Response(
        orjson.dumps({"error": message}), status=status, content_type="application/json"
    )


def origin_allowed(daemon: Daemon) -> bool:
    allowed = daemon.settings.websocket.allowed_origins
    origin = websocket.headers.get("Origin")
    return not allowed or origin is None or origin in allowed


def is_running(observed: ObservedContainer | None) -> bool:
    return (
        observed is not None
        and observed.container_id is not None
        and observed.state in (RuntimeState.STARTING, RuntimeState.RUNNING)
    )


async def history(daemon: Daemon, internal_id: str, lines: int) -> str:
    """The last ``lines`` console lines: ring buffer, else the engine's log."""
    observed = daemon.observed.get(internal_id)
    container_id = observed.container_id if observed is not None else None
    return await daemon.consoles.history(internal_id, container_id=container_id, lines=lines)


async def send_command(daemon: Daemon, internal_id: str, command: str) -> None:
    """Write a console command; raises Conflict-like errors for the caller to report."""
    observed = daemon.observed.get(internal_id)
    if not is_running(observed):
        raise ContainerNotRunning()
    assert observed is not None and observed.container_id is not None
    await daemon.consoles.send_command(observed.container_id, command)


class ContainerSession:
    """One watcher of one container."""

    def __init__(self, daemon: Daemon, internal_id: str, grant: Grant | None) -> None:
        self.daemon = daemon
        self.internal_id = internal_id
        self.grant = grant
        settings = daemon.settings.websocket
        self.outbox = Outbox(settings.queue_frames)
        self.bucket = TokenBucket(rate=settings.inbound_per_second, burst=settings.inbound_burst)
        self._stats_on = False

    # sinks (event loop)
    def on_lines(self, batch: Batch) -> None:
        self.outbox.put(batch.frame)

    def on_event(self, event: dict[str, Any]) -> None:
        self.outbox.put(event)
        if event.get("event") == "event":
            self.follow_stats()

    def on_stats(self, event: dict[str, Any]) -> None:
        self.outbox.put(event)

    def follow_stats(self) -> None:
        observed = self.daemon.observed.get(self.internal_id)
        if is_running(observed):
            assert observed is not None and observed.container_id is not None
            self.daemon.stats.subscribe(self.internal_id, observed.container_id, self.on_stats)
            self._stats_on = True
        elif self._stats_on:
            self.daemon.stats.unsubscribe(self.internal_id, self.on_stats)
            self._stats_on = False

    async def run(self) -> None:
        daemon = self.daemon
        daemon.consoles.subscribe(self.internal_id, self.on_lines)
        daemon.container_events.subscribe(self.internal_id, self.on_event)
        try:
            await websocket.accept()
            observed = daemon.observed.get(self.internal_id) or ObservedContainer(
                internal_id=self.internal_id
            )
            self.outbox.put({"event": "logs", "data": await history(daemon, self.internal_id, 100)})
            self.outbox.put(state_event(observed))
            self.follow_stats()
            tasks = [
                asyncio.create_task(self._send()),
                asyncio.create_task(self._receive()),
            ]
            if self.grant is not None:
                tasks.append(asyncio.create_task(self._expire(self.grant.expires_at)))
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            daemon.consoles.unsubscribe(self.internal_id, self.on_lines)
            daemon.container_events.unsubscribe(self.internal_id, self.on_event)
            daemon.stats.unsubscribe(self.internal_id, self.on_stats)

    async def _send(self) -> None:
        while True:
            frame = await self.outbox.get()
            if frame is None:
                code, reason = self.outbox.closing or (1000, "")
                await websocket.close(code, reason)
                return
            await websocket.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def _expire(self, expires_at: float) -> None:
        await asyncio.sleep(max(expires_at - time.time(), 0))
        self.outbox.close(
            CLOSE_TOKEN_EXPIRED,
            "token expired",
            {"event": "daemon_message", "data": "Token expired: reconnect with a new token"},
        )
        await asyncio.Event().wait()  # the sender closes the socket

    def error(self, message: str) -> None:
        self.outbox.put({"event": "error", "data": message})

    async def _receive(self) -> None:
        while True:
            raw = await websocket.receive()
            if not self.bucket.allow():
                self.error("Too many messages: slow down")
                continue
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.error("Malformed message: not JSON")
                continue
            if not isinstance(message, dict) or not isinstance(message.get("event"), str):
                self.error("Malformed message: expected an object with an 'event'")
                continue
            try:
                await self._handle(message)
            except LightdError as exc:
                self.error(exc.message)

    async def _handle(self, message: dict[str, Any]) -> None:
        event = message["event"]
        daemon = self.daemon
        if event == "send_command":
            command = message.get("command")
            if not isinstance(command, str) or not command or len(command) > MAX_COMMAND_CHARS:
                self.error(f"'command' must be a text of 1 to {MAX_COMMAND_CHARS} characters")
                return
            if "\n" in command or "\r" in command:
                self.error("'command' must be one line")
                return
            await send_command(daemon, self.internal_id, command)
        elif event == "power":
            action = message.get("action")
            if action not in POWER_ACTIONS:
                self.error(f"'action' must be one of {', '.join(POWER_ACTIONS)}")
                return
            await getattr(daemon.container_service, str(action))(self.internal_id)
            self.outbox.put({"event": "daemon_message", "data": f"Power action {action} accepted"})
        elif event == "logs":
            lines = message.get("lines", 100)
            limit = daemon.settings.containers.console_ring_lines
            if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= limit:
                self.error(f"'lines' must be a number from 1 to {limit}")
                return
            self.outbox.put(
                {"event": "logs", "data": await history(daemon, self.internal_id, lines)}
            )
        elif event == "stats":
            observed = daemon.observed.get(self.internal_id)
            if not is_running(observed):
                self.error("Container is not running")
                return
            assert observed is not None and observed.container_id is not None
            self.outbox.put(await daemon.stats.once(observed.container_id))
        else:
            self.error(f"Unknown event {event!r}")


@blueprint.websocket("/ws/<internal_id>")
async def container_socket(internal_id: str) -> Response | None:
    daemon = get_daemon()
    if not origin_allowed(daemon):
        return refuse(403, "Origin not allowed")
    token = websocket.args.get("token", "")
    grant: Grant | None = None
    if not token:
        return refuse(401, "Missing or invalid authorization token")
    if not daemon.is_master(token):
        peek = daemon.tokens.peek(token)
        if peek is None or (peek.container is not None and peek.container != internal_id):
            return refuse(401, "Missing or invalid authorization token")
    if not is_internal_id(internal_id) or daemon.containers.get(internal_id) is None:
        return refuse(404, "Container not found")
    registry = daemon.sockets
    if registry.get(internal_id, 0) >= daemon.settings.websocket.max_sockets_per_container:
        return refuse(429, "Too many connections to this container")
    if not daemon.is_master(token):
        grant = await daemon.tokens.use(token, container=internal_id)
        if grant is None:
            return refuse(401, "Missing or invalid authorization token")
    registry[internal_id] = registry.get(internal_id, 0) + 1
    try:
        await ContainerSession(daemon, internal_id, grant).run()
    finally:
        registry[internal_id] -= 1
        if registry[internal_id] <= 0:
            del registry[internal_id]
    return None


@blueprint.websocket("/watch")
async def node_watch() -> Response | None:
    daemon = get_daemon()
    if not origin_allowed(daemon):
        return refuse(403, "Origin not allowed")
    token = websocket.args.get("token", "")
    if not token or not daemon.is_master(token):
        return refuse(401, "Missing or invalid authorization token")
    since_text = websocket.args.get("since")
    since: int | None = None
    if since_text is not None:
        try:
            since = int(since_text)
        except ValueError:
            return refuse(400, "Invalid field 'since': must be a resource_version number")
    if daemon.watch_sockets >= daemon.settings.websocket.max_watch_sockets:
        return refuse(429, "Too many watch connections")
    outbox = Outbox(daemon.settings.websocket.queue_frames * 4)
    daemon.watch_sockets += 1
    daemon.watch.subscribe(outbox.put)
    try:
        missed = daemon.watch.since(since) if since is not None else None
        if missed is None:
            outbox.put(daemon.watch.snapshot())
        else:
            for event in missed:
                outbox.put(event)
        await websocket.accept()
        sender = asyncio.create_task(_send_watch(outbox))
        receiver = asyncio.create_task(_drain_watch())
        beat = asyncio.create_task(_heartbeat(daemon, outbox))
        try:
            await asyncio.wait([sender, receiver, beat], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver, beat):
                task.cancel()
            await asyncio.gather(sender, receiver, beat, return_exceptions=True)
    finally:
        daemon.watch.unsubscribe(outbox.put)
        daemon.watch_sockets -= 1
    return None


async def _send_watch(outbox: Outbox) -> None:
    while True:
        frame = await outbox.get()
        if frame is None:
            return
        await websocket.send(orjson.dumps(frame).decode())


async def _drain_watch() -> None:
    while True:
        await websocket.receive()  # the watch stream takes no input; this notices a close


async def _heartbeat(daemon: Daemon, outbox: Outbox) -> None:
    while True:
        await asyncio.sleep(daemon.settings.websocket.heartbeat_seconds)
        outbox.put({"event": "heartbeat", "resource_version": daemon.watch.resource_version})
