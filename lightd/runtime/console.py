"""One console reader per running container, whatever the number of watchers.

A reader thread follows the container's output, splits it into lines, keeps the recent
history in a ring buffer, tests each line (ANSI codes stripped) against the start
pattern, and hands lines to subscribers on the event loop. It must not change desired
state and must not decide restarts; it reports a pattern match and the end of output
through callbacks.
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

from lightd.engine import DockerEngine
from lightd.engine.streams import Stream, follow_output

log = logging.getLogger("lightd.console")

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
LineSink = Callable[[list[str]], None]
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
    stream: Stream | None = None
    thread: threading.Thread | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    sinks: set[LineSink] = field(default_factory=set)
    pending: list[str] = field(default_factory=list)
    pending_lock: threading.Lock = field(default_factory=threading.Lock)
    flush_scheduled: bool = False
    window_start: float = 0.0
    window_count: int = 0
    window_noticed: bool = False


class ConsoleHub:
    """Console readers keyed by internal_id."""

    def __init__(
        self,
        engine: DockerEngine,
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

    def ensure(
        self, internal_id: str, *, container_id: str, started_at: float | None, pattern: str | None
    ) -> Console:
        """Follow this run of the container (a new run gets a new reader and detection)."""
        current = self._consoles.get(internal_id)
        if (
            current is not None
            and current.container_id == container_id
            and current.started_at == started_at
            and not current.stopped.is_set()
        ):
            current.pattern = re.compile(pattern) if pattern else None
            return current
        ring: deque[str] = current.ring if current is not None else deque(maxlen=self._ring_lines)
        sinks = current.sinks if current is not None else set()
        if current is not None:
            self._halt(current)
        console = Console(
            internal_id=internal_id,
            container_id=container_id,
            started_at=started_at,
            pattern=re.compile(pattern) if pattern else None,
            ring=ring,
            sinks=sinks,
        )
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

    def history(self, internal_id: str, lines: int) -> list[str] | None:
        console = self._consoles.get(internal_id)
        if console is None or not console.ring:
            return None
        return list(console.ring)[-lines:] if lines > 0 else []

    def _halt(self, console: Console) -> None:
        console.stopped.set()
        stream = console.stream
        if stream is not None:
            with contextlib.suppress(Exception):  # closing a dead stream may fail
                stream.close()

    def _read(self, console: Console) -> None:
        partial = b""
        try:
            stream = follow_output(
                self._engine.client(), console.container_id, since=console.started_at
            )
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
                        self._deliver(console, [chunk.decode("utf-8", "replace")])
                    continue
                *complete, partial = partial.split(b"\n")
                self._deliver(console, [line.decode("utf-8", "replace") for line in complete])
            if partial:
                self._deliver(console, [partial.decode("utf-8", "replace")])
        except Exception as exc:
            if not console.stopped.is_set():
                log.info("console of %s ended: %s", console.internal_id, exc)
        finally:
            ended = not console.stopped.is_set()
            console.stopped.set()
            if ended and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_end, console.internal_id)

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
        now = time.monotonic()
        if now - console.window_start >= self._throttle_window:
            console.window_start = now
            console.window_count = 0
            console.window_noticed = False
        room = self._throttle_lines - console.window_count
        console.window_count += len(lines)
        if room < len(lines):
            kept = lines[: max(room, 0)]
            if not console.window_noticed:
                console.window_noticed = True
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
            batch, console.pending = console.pending, []
            console.flush_scheduled = False
        if not batch:
            return
        for sink in list(console.sinks):
            try:
                sink(batch)
            except Exception:
                log.exception("console sink failed")
