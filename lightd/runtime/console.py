"""One console reader per running container, whatever the number of watchers.

A reader thread follows the container's output, splits it into lines, keeps the recent
history in a ring buffer, tests each line (ANSI codes stripped) against the start
pattern, and hands lines to subscribers on the event loop. It must not change desired
state and must not decide restarts; it reports a pattern match and the end of output
through callbacks. Console history (ring buffer, else the engine's log) and command
lines to a container's stdin are served from here, so that nothing above the runtime
calls the engine for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import orjson

from lightd.engine.base import Engine
from lightd.engine.records import Stream
from lightd.errors import EngineError

log = logging.getLogger("lightd.console")

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class Batch:
    """Console lines handed to every watcher at once; the frame is encoded once for all."""

    lines: tuple[str, ...]

    @cached_property
    def frame(self) -> str:
        text = "".join(f"{line}\n" for line in self.lines)
        return orjson.dumps({"event": "console", "data": text}).decode()


LineSink = Callable[[Batch], None]
Stamp = tuple[bytes, bytes]
RECENT_STAMPS = 16_384


def stamp_key(stamp: bytes) -> Stamp:
    """A comparable form of the engine's RFC 3339 timestamp (fractions padded)."""
    head, _, fraction = stamp.rstrip(b"Z").partition(b".")
    return head, fraction.ljust(9, b"0")


THROTTLE_NOTICE = (
    "[lightd] console output is too fast (over {limit} lines per 100 ms): "
    "some lines are not shown here; the server log keeps them"
)


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


@dataclass
class Console:
    internal_id: str
    container_id: str
    started_at: float | None
    pattern: re.Pattern[str] | None
    ring: deque[str]
    matched: bool = False
    stream: Stream[bytes] | None = None
    thread: threading.Thread | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    sinks: set[LineSink] = field(default_factory=set)
    pending: list[str] = field(default_factory=list)
    pending_lock: threading.Lock = field(default_factory=threading.Lock)
    flush_scheduled: bool = False
    tokens: float = -1.0  # throttle bucket; -1: full at the first line
    refilled_at: float = 0.0
    throttled: bool = False
    last_stamp: Stamp | None = None  # the newest line read, to resume without repeats
    # Stamps of recent lines: the engine repeats some lines around a log rotation.
    recent: set[Stamp] = field(default_factory=set)
    recent_order: deque[Stamp] = field(default_factory=deque)


class ConsoleHub:
    """Console readers keyed by internal_id."""

    def __init__(
        self,
        engine: Engine,
        *,
        ring_lines: int = 1000,
        throttle_lines: int = 2000,
        throttle_window_seconds: float = 0.1,
        on_match: Callable[[str, str], None],
        on_end: Callable[[str], None],
    ) -> None:
        self._engine = engine
        self._ring_lines = ring_lines
        self._throttle_lines = throttle_lines
        self._throttle_window = throttle_window_seconds
        self._on_match = on_match
        self._on_end = on_end
        self._consoles: dict[str, Console] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def watching(self, internal_id: str) -> Console | None:
        return self._consoles.get(internal_id)

    def readers(self) -> int:
        """Reader threads alive now (one per container at most)."""
        return sum(1 for c in self._consoles.values() if not c.stopped.is_set())

    def subscribe(self, internal_id: str, sink: LineSink) -> None:
        """Receive this container's console lines (batched) on the event loop."""
        console = self._consoles.get(internal_id)
        if console is None:
            console = Console(
                internal_id=internal_id,
                container_id="",
                started_at=None,
                pattern=None,
                ring=deque(maxlen=self._ring_lines),
            )
            console.stopped.set()
            self._consoles[internal_id] = console
        console.sinks.add(sink)

    def unsubscribe(self, internal_id: str, sink: LineSink) -> None:
        console = self._consoles.get(internal_id)
        if console is not None:
            console.sinks.discard(sink)

    def new_run(
        self, internal_id: str, *, container_id: str, since: float | None, pattern: str | None
    ) -> Console:
        """A container (re)started: a fresh reader and a fresh start detection."""
        current = self._consoles.get(internal_id)
        return self._start_reader(
            internal_id,
            container_id=container_id,
            since=since,
            pattern=pattern,
            resume=None,
            previous=current,
        )

    def ensure(
        self, internal_id: str, *, container_id: str, started_at: float | None, pattern: str | None
    ) -> Console:
        """Keep a reader on this container: resume a dead one, adopt one lightd did not start."""
        current = self._consoles.get(internal_id)
        if current is not None and current.container_id == container_id:
            if not current.stopped.is_set():
                current.pattern = re.compile(pattern) if pattern else None
                return current
            # The engine ended the stream (log rotation does): go on after the last line.
            return self._start_reader(
                internal_id,
                container_id=container_id,
                since=current.started_at,
                pattern=pattern,
                resume=current,
                previous=current,
            )
        return self._start_reader(
            internal_id,
            container_id=container_id,
            since=started_at,
            pattern=pattern,
            resume=None,
            previous=current,
        )

    def _start_reader(
        self,
        internal_id: str,
        *,
        container_id: str,
        since: float | None,
        pattern: str | None,
        resume: Console | None,
        previous: Console | None,
    ) -> Console:
        ring: deque[str] = previous.ring if previous is not None else deque(maxlen=self._ring_lines)
        sinks = previous.sinks if previous is not None else set()
        if previous is not None:
            self._halt(previous)
        console = Console(
            internal_id=internal_id,
            container_id=container_id,
            started_at=since,
            pattern=re.compile(pattern) if pattern else None,
            ring=ring,
            sinks=sinks,
        )
        if resume is not None:
            console.last_stamp = resume.last_stamp
            console.matched = resume.matched
            console.recent, console.recent_order = resume.recent, resume.recent_order
        self._consoles[internal_id] = console
        console.thread = threading.Thread(
            target=self._read, args=(console,), name=f"console-{internal_id}", daemon=True
        )
        console.thread.start()
        return console

    def stop(self, internal_id: str) -> None:
        console = self._consoles.get(internal_id)
        if console is not None:
            self._halt(console)

    def forget(self, internal_id: str) -> None:
        console = self._consoles.pop(internal_id, None)
        if console is not None:
            self._halt(console)

    def stop_all(self) -> None:
        for console in list(self._consoles.values()):
            self._halt(console)

    def ring(self, internal_id: str, lines: int) -> list[str] | None:
        """The last ``lines`` lines read by this container's reader, if it read any."""
        console = self._consoles.get(internal_id)
        if console is None or not console.ring:
            return None
        return list(console.ring)[-lines:] if lines > 0 else []

    async def history(self, internal_id: str, *, container_id: str | None, lines: int) -> str:
        """The last ``lines`` console lines: ring buffer, else the engine's log."""
        found = self.ring(internal_id, lines)
        if found is None:
            if container_id is None:
                return ""
            try:
                raw = await self._engine.logs(container_id, tail=lines)
            except EngineError:
                return ""
            found = raw.decode("utf-8", "replace").splitlines()
        return "".join(f"{line}\n" for line in found[-lines:]) if lines > 0 else ""

    async def send_command(self, container_id: str, command: str) -> None:
        """Write ``command`` and a newline to the container's stdin."""
        await self._engine.send_line(container_id, command)

    def _halt(self, console: Console) -> None:
        console.stopped.set()
        stream = console.stream
        if stream is not None:
            with contextlib.suppress(Exception):  # closing a dead stream may fail
                stream.close()

    def _read(self, console: Console) -> None:
        partial = b""
        resume = console.last_stamp
        try:
            stream = self._engine.follow_output(console.container_id, since=console.started_at)
            console.stream = stream
            if console.stopped.is_set():
                stream.close()
                return
            for chunk in stream:
                if console.stopped.is_set():
                    break
                if not chunk:
                    continue
                partial += chunk
                if b"\n" not in partial:
                    if len(partial) > 64 * 1024:
                        partial, chunk = b"", partial
                        self._deliver(console, self._fresh(console, [chunk], resume))
                    continue
                *complete, partial = partial.split(b"\n")
                self._deliver(console, self._fresh(console, complete, resume))
            if partial:
                self._deliver(console, self._fresh(console, [partial], resume))
        except Exception as exc:
            if not console.stopped.is_set():
                log.info("console of %s ended: %s", console.internal_id, exc)
        finally:
            ended = not console.stopped.is_set()
            console.stopped.set()
            if ended and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_end, console.internal_id)

    @staticmethod
    def _fresh(console: Console, raw_lines: list[bytes], resume: Stamp | None) -> list[str]:
        """Lines without their engine timestamps, skipping those read before a resume."""
        lines = []
        recent, order = console.recent, console.recent_order
        for raw in raw_lines:
            stamp, _, text = raw.partition(b" ")
            key = stamp_key(stamp)
            if (resume is not None and key <= resume) or key in recent:
                continue
            recent.add(key)
            order.append(key)
            if len(order) > RECENT_STAMPS:
                recent.discard(order.popleft())
            if console.last_stamp is None or key > console.last_stamp:
                console.last_stamp = key
            lines.append(text.decode("utf-8", "replace"))
        return lines

    def _deliver(self, console: Console, lines: list[str]) -> None:
        """Reader thread: history, start detection (every line), throttled fan-out."""
        lines = [line.rstrip("\r") for line in lines]
        console.ring.extend(lines)
        if console.pattern is not None and not console.matched:
            for line in lines:
                if console.pattern.search(strip_ansi(line)):
                    console.matched = True
                    if self._loop is not None:
                        self._loop.call_soon_threadsafe(
                            self._on_match, console.internal_id, console.container_id
                        )
                    break
        if not console.sinks or self._loop is None:
            return
        # A token bucket: `throttle_lines` per window on average, bursts up to twice that
        # (output arrives in bursts even from a steady writer).
        now = time.monotonic()
        capacity = 2.0 * self._throttle_lines
        if console.tokens < 0:
            console.tokens = capacity
        else:
            rate = self._throttle_lines / self._throttle_window
            console.tokens = min(capacity, console.tokens + (now - console.refilled_at) * rate)
        console.refilled_at = now
        if console.tokens >= capacity:
            console.throttled = False  # the flood is over: a new one gets a new notice
        if console.tokens >= len(lines):
            console.tokens -= len(lines)
        else:
            kept = lines[: int(console.tokens)]
            console.tokens -= len(kept)
            if not console.throttled:
                console.throttled = True
                kept.append(THROTTLE_NOTICE.format(limit=self._throttle_lines))
            lines = kept
        if not lines:
            return
        with console.pending_lock:
            console.pending.extend(lines)
            if console.flush_scheduled:
                return
            console.flush_scheduled = True
        self._loop.call_soon_threadsafe(self._flush, console)

    def _flush(self, console: Console) -> None:
        """Event loop: hand every pending line to every sink as one batch."""
        with console.pending_lock:
            pending, console.pending = console.pending, []
            console.flush_scheduled = False
        if not pending:
            return
        batch = Batch(tuple(pending))
        for sink in list(console.sinks):
            try:
                sink(batch)
            except Exception:
                log.exception("console sink failed")
