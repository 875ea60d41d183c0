"""WebSocket routes: one container's console, stats and state; and the node watch stream.

``/ws/<internal_id>?token=`` takes the master token or a minted one (scoped tokens only
for their container; single-use tokens are consumed at connect); ``/watch?token=`` takes
the master token. Refusals are HTTP answers before the upgrade. Inbound messages are
rate-limited and validated; a bad one gets an ``error`` event and the socket stays open.
Close code 4001 means the token expired. Power actions go through the same desired-state
path as REST; console input, history and stats go through the ``consoles`` facade, socket
counts through ``sockets`` (:class:`~lightd.services.Services`). It must not call the
engine, nor reach the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from quart import Blueprint, Response, websocket

from lightd.api.context import get_services
from lightd.api.outbox import Outbox, TokenBucket
from lightd.auth.tokens import Grant
from lightd.errors import LightdError
from lightd.runtime.console import Batch
from lightd.runtime.events import state_event
from lightd.services import Services
from lightd.spec.ids import is_internal_id

log = logging.getLogger("lightd.ws")

blueprint = Blueprint("ws", __name__)

CLOSE_TOKEN_EXPIRED = 4001
MAX_COMMAND_CHARS = 4096
POWER_ACTIONS = ("start", "stop", "kill", "restart")


def refuse(status: int, message: str) -> Response:
    return Response(
        orjson.dumps({"error": message}), status=status, content_type="application/json"
    )


def origin_allowed(services: Services) -> bool:
    allowed = services.settings.websocket.allowed_origins
    origin = websocket.headers.get("Origin")
    return not allowed or origin is None or origin in allowed


class ContainerSession:
    """One watcher of one container."""

    def __init__(self, services: Services, internal_id: str, grant: Grant | None) -> None:
        self.services = services
        self.consoles = services.consoles
        self.internal_id = internal_id
        self.grant = grant
        settings = services.settings.websocket
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
        container_id = self.consoles.running_container(self.internal_id)
        if container_id is not None:
            self.consoles.follow_stats(self.internal_id, container_id, self.on_stats)
            self._stats_on = True
        elif self._stats_on:
            self.consoles.unfollow_stats(self.internal_id, self.on_stats)
            self._stats_on = False

    async def run(self) -> None:
        consoles = self.consoles
        consoles.subscribe(self.internal_id, lines=self.on_lines, events=self.on_event)
        try:
            await websocket.accept()
            observed = consoles.state(self.internal_id)
            self.outbox.put(
                {"event": "logs", "data": await consoles.history(self.internal_id, 100)}
            )
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
            consoles.unsubscribe(
                self.internal_id, lines=self.on_lines, events=self.on_event, stats=self.on_stats
            )

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
        services = self.services
        if event == "send_command":
            command = message.get("command")
            if not isinstance(command, str) or not command or len(command) > MAX_COMMAND_CHARS:
                self.error(f"'command' must be a text of 1 to {MAX_COMMAND_CHARS} characters")
                return
            if "\n" in command or "\r" in command:
                self.error("'command' must be one line")
                return
            await services.consoles.send_command(self.internal_id, command)
        elif event == "power":
            action = message.get("action")
            if action not in POWER_ACTIONS:
                self.error(f"'action' must be one of {', '.join(POWER_ACTIONS)}")
                return
            await getattr(services.containers, str(action))(self.internal_id)
            self.outbox.put({"event": "daemon_message", "data": f"Power action {action} accepted"})
        elif event == "logs":
            lines = message.get("lines", 100)
            limit = services.settings.containers.console_ring_lines
            if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= limit:
                self.error(f"'lines' must be a number from 1 to {limit}")
                return
            self.outbox.put(
                {"event": "logs", "data": await services.consoles.history(self.internal_id, lines)}
            )
        elif event == "stats":
            container_id = services.consoles.running_container(self.internal_id)
            if container_id is None:
                self.error("Container is not running")
                return
            self.outbox.put(
                await services.consoles.stats_once(container_id, internal_id=self.internal_id)
            )
        else:
            self.error(f"Unknown event {event!r}")


@blueprint.websocket("/ws/<internal_id>")
async def container_socket(internal_id: str) -> Response | None:
    services = get_services()
    if not origin_allowed(services):
        return refuse(403, "Origin not allowed")
    tokens = services.tokens
    token = websocket.args.get("token", "")
    grant: Grant | None = None
    if not token:
        return refuse(401, "Missing or invalid authorization token")
    if not tokens.is_master(token):
        peek = tokens.peek(token)
        if peek is None or (peek.container is not None and peek.container != internal_id):
            return refuse(401, "Missing or invalid authorization token")
    if not is_internal_id(internal_id) or not services.reads.exists(internal_id):
        return refuse(404, "Container not found")
    sockets = services.sockets
    if sockets.of_container(internal_id) >= services.settings.websocket.max_sockets_per_container:
        return refuse(429, "Too many connections to this container")
    if not tokens.is_master(token):
        grant = await tokens.use(token, container=internal_id)
        if grant is None:
            return refuse(401, "Missing or invalid authorization token")
    with sockets.container_socket(internal_id):
        await ContainerSession(services, internal_id, grant).run()
    return None


@blueprint.websocket("/watch")
async def node_watch() -> Response | None:
    services = get_services()
    if not origin_allowed(services):
        return refuse(403, "Origin not allowed")
    token = websocket.args.get("token", "")
    if not token or not services.tokens.is_master(token):
        return refuse(401, "Missing or invalid authorization token")
    since_text = websocket.args.get("since")
    since: int | None = None
    if since_text is not None:
        try:
            since = int(since_text)
        except ValueError:
            return refuse(400, "Invalid field 'since': must be a resource_version number")
    settings = services.settings.websocket
    if services.sockets.watch >= settings.max_watch_sockets:
        return refuse(429, "Too many watch connections")
    outbox = Outbox(settings.queue_frames * 4)
    watch = services.watch
    with services.sockets.watch_socket():
        watch.subscribe(outbox.put)
        try:
            missed = watch.since(since) if since is not None else None
            if missed is None:
                outbox.put(watch.snapshot())
            else:
                for event in missed:
                    outbox.put(event)
            await websocket.accept()
            sender = asyncio.create_task(_send_watch(outbox))
            receiver = asyncio.create_task(_drain_watch())
            beat = asyncio.create_task(_heartbeat(services, outbox))
            try:
                await asyncio.wait([sender, receiver, beat], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sender, receiver, beat):
                    task.cancel()
                await asyncio.gather(sender, receiver, beat, return_exceptions=True)
        finally:
            watch.unsubscribe(outbox.put)
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


async def _heartbeat(services: Services, outbox: Outbox) -> None:
    while True:
        await asyncio.sleep(services.settings.websocket.heartbeat_seconds)
        outbox.put({"event": "heartbeat", "resource_version": services.watch.resource_version})
