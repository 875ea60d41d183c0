"""One console reader per running container, whatever the number of watchers.

A reader thread follows the container's output, splits it into lines, keeps the recent
history in a ring buffer, tests each line (ANSI codes stripped) against the start
pattern, and hands lines to subscribers on the event loop. It must not change desired
state and must not decide restarts; it reports a pattern match and the end of output
through callbacks. Console history (ring buffer, else the engine's log) and command
lines to a container's stdin are served from here, so that nothing above the runtime
calls the engine for them.

Order and loss are judged on the engine's own timestamps of the lines, never on when
the reader happened to read them: the throttle limits what the container wrote per
window of its own time (a reader that fell behind delivers its backlog whole), a line
older than the newest one delivered (beyond a short tolerance for stdout and stderr
interleaving) is a repeat of the engine's and is skipped, and when the engine ends a
stream while the container runs the reader opens a new one from the newest line it
delivered, so a log rotation or a stream restart neither loses nor repeats lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import orjson

from lightd.engine.base import Engine
from lightd.engine.jsonlog import time_ns
from lightd.engine.records import Stream
from lightd.errors import EngineError
from lightd.runtime.threads import start_soon

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
Stamp = tuple[int, int]  # (nanoseconds since the epoch, hash of the line's text)
RECENT_STAMPS = 65_536
# A line this much older than the newest one delivered can only be a repeat (the engine
# re-reads a rotated file); within it, stdout and stderr lines may interleave.
REPEAT_TOLERANCE_NS = 250_000_000
# A resumed stream starts this far before the newest line delivered (repeats skipped).
RESUME_OVERLAP_SECONDS = 1.0
NS = 1_000_000_000


def stamp_ns(stamp: bytes) -> int:
    """Nanoseconds since the epoch of the engine's RFC 3339 UTC timestamp (0 if unreadable)."""
    return time_ns(stamp.decode("ascii", "replace"))


def stamp_key(stamp: bytes) -> int:
    """A comparable form of the engine's timestamp (kept for callers that order stamps)."""
    return stamp_ns(stamp)


THROTTLE_NOTICE = (
    "[lightd] console output is too fast (over {limit} lines per {window} ms): "
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
    refilled_ns: int = 0  # the engine time of the line that last refilled the bucket
    throttled: bool = False
    last_ns: int | None = None  # engine time of the newest line read: resume, skip repeats
    # Keys of recent lines: the engine repeats some lines around a log rotation.
    recent: set[Stamp] = field(default_factory=set)
    recent_order: deque[Stamp] = field(default_factory=deque)
    throttled_lines: int = 0  # dropped by the throttle (the container wrote too fast)
    repeats_skipped: int = 0  # lines the engine sent twice


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
        before_chunk: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        # A test's hook, called by the reader thread before each chunk (to fall behind).
        self._before_chunk = before_chunk
        self._ring_lines = ring_lines
        self._throttle_lines = throttle_lines
        self._throttle_window = throttle_window_seconds
        self._on_match = on_match
        self._on_end = on_end
        self._consoles: dict[str, Console] = {}
        self._retired = (0, 0)  # line counts of readers replaced or forgotten
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def watching(self, internal_id: str) -> Console | None:
        return self._consoles.get(internal_id)

    def line_counts(self) -> tuple[int, int]:
        """Lines the throttle dropped and lines the engine repeated, since start."""
        throttled, repeats = self._retired
        for console in self._consoles.values():
            throttled += console.throttled_lines
            repeats += console.repeats_skipped
        return throttled, repeats

    def _retire(self, console: Console) -> None:
        throttled, repeats = self._retired
        self._retired = (throttled + console.throttled_lines, repeats + console.repeats_skipped)

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
            # The reader gave up (the engine failed or ended twice): go on after the
            # newest line delivered (the reader starts from there).
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
            self._retire(previous)
        console = Console(
            internal_id=internal_id,
            container_id=container_id,
            started_at=since,
            pattern=re.compile(pattern) if pattern else None,
            ring=ring,
            sinks=sinks,
        )
        if resume is not None:
            console.last_ns = resume.last_ns
            console.matched = resume.matched
            console.recent, console.recent_order = resume.recent, resume.recent_order
            console.tokens, console.refilled_ns = resume.tokens, resume.refilled_ns
            console.throttled = resume.throttled
        self._consoles[internal_id] = console
        console.thread = threading.Thread(
            target=self._read, args=(console,), name=f"console-{internal_id}", daemon=True
        )
        start_soon(console.thread)  # the loop does not wait for the thread to run
        return console

    def stop(self, internal_id: str) -> None:
        console = self._consoles.get(internal_id)
        if console is not None:
            self._halt(console)

    def forget(self, internal_id: str) -> None:
        console = self._consoles.pop(internal_id, None)
        if console is not None:
            self._halt(console)
            self._retire(console)

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
        try:
            # Whole seconds: the first lines can carry times just before StartedAt.
            since = None if console.started_at is None else float(int(console.started_at))
            while not console.stopped.is_set():
                if console.last_ns is not None:
                    resume_at = console.last_ns / NS - RESUME_OVERLAP_SECONDS
                    since = resume_at if since is None else max(since, resume_at)
                delivered = self._follow(console, since)
                # The engine ended the stream: the container stopped, or the engine
                # restarted the stream (a rotation can). Look once more from the newest
                # line delivered; a stream that brings nothing new is the real end.
                if not delivered:
                    break
        except Exception as exc:
            if not console.stopped.is_set():
                log.info("console of %s ended: %s", console.internal_id, exc)
        finally:
            ended = not console.stopped.is_set()
            console.stopped.set()
            if ended and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_end, console.internal_id)

    def _follow(self, console: Console, since: float | None) -> int:
        """Read one engine stream to its end; the number of new lines it brought."""
        partial = b""
        delivered = 0
        stream = self._engine.follow_output(console.container_id, since=since)
        console.stream = stream
        try:
            if console.stopped.is_set():
                return 0
            for chunk in stream:
                if console.stopped.is_set():
                    return delivered
                if not chunk:
                    continue
                if self._before_chunk is not None:
                    self._before_chunk()
                partial += chunk
                if b"\n" not in partial:
                    if len(partial) > 64 * 1024:
                        partial, chunk = b"", partial
                        delivered += self._deliver(console, self._fresh(console, [chunk]))
                    continue
                *complete, partial = partial.split(b"\n")
                delivered += self._deliver(console, self._fresh(console, complete))
        except Exception as exc:  # the stream broke under the reader: a new one goes on
            if not console.stopped.is_set():
                log.info("console stream of %s broke: %s", console.internal_id, exc)
            return delivered
        finally:
            with contextlib.suppress(Exception):  # closing a dead stream may fail
                stream.close()
        if partial:
            delivered += self._deliver(console, self._fresh(console, [partial]))
        return delivered

    @staticmethod
    def _fresh(console: Console, raw_lines: list[bytes]) -> list[tuple[int, str]]:
        """Lines with their engine times, skipping the ones the engine sent before."""
        lines = []
        recent, order = console.recent, console.recent_order
        for raw in raw_lines:
            stamp, _, text = raw.partition(b" ")
            at = stamp_ns(stamp)
            key = (at, hash(text))
            last = console.last_ns
            if key in recent or (last is not None and at < last - REPEAT_TOLERANCE_NS):
                console.repeats_skipped += 1
                continue
            recent.add(key)
            order.append(key)
            # Keys older than the tolerance are judged by time alone: keep fewer.
            while order and (
                len(order) > RECENT_STAMPS or order[0][0] < at - 2 * REPEAT_TOLERANCE_NS
            ):
                recent.discard(order.popleft())
            if last is None or at > last:
                console.last_ns = at
            lines.append((at, text.decode("utf-8", "replace")))
        return lines

    def _admit(self, console: Console, lines: list[tuple[int, str]]) -> list[str]:
        """The throttle, on the container's own clock: a token bucket refilled by the
        engine time between lines, ``throttle_lines`` per window on average and bursts up
        to twice that (output arrives in bursts even from a steady writer). A backlog read
        late keeps its original spacing, so it passes whole unless the container itself
        wrote too fast."""
        capacity = 2.0 * self._throttle_lines
        rate = self._throttle_lines / (self._throttle_window * NS)
        kept: list[str] = []
        for at, text in lines:
            if console.tokens < 0:
                console.tokens = capacity
            elif at > console.refilled_ns:
                console.tokens = min(capacity, console.tokens + (at - console.refilled_ns) * rate)
            console.refilled_ns = max(console.refilled_ns, at)
            if console.tokens >= capacity:
                console.throttled = False  # the flood is over: a new one gets a new notice
            if console.tokens >= 1.0:
                console.tokens -= 1.0
                kept.append(text)
                continue
            console.throttled_lines += 1
            if not console.throttled:
                console.throttled = True
                kept.append(
                    THROTTLE_NOTICE.format(
                        limit=self._throttle_lines, window=round(self._throttle_window * 1000)
                    )
                )
        return kept

    def _deliver(self, console: Console, stamped: list[tuple[int, str]]) -> int:
        """Reader thread: history, start detection (every line), throttled fan-out."""
        if not stamped:
            return 0
        stamped = [(at, text.rstrip("\r")) for at, text in stamped]
        lines = [text for _, text in stamped]
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
            return len(stamped)
        kept = self._admit(console, stamped)
        if not kept:
            return len(stamped)
        with console.pending_lock:
            console.pending.extend(kept)
            if console.flush_scheduled:
                return len(stamped)
            console.flush_scheduled = True
        self._loop.call_soon_threadsafe(self._flush, console)
        return len(stamped)

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
