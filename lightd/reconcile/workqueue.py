"""A workqueue keyed by resource, in the manner of client-go's.

A key is never handed to two workers at once; adding a key that is already queued does
nothing (hints collapse); a key added while it is being worked on is queued again when
its worker is done. Delayed adds and per-key failure backoff (exponential with jitter,
capped) are built in. It must not know what a key means.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float = 0.5
    max_seconds: float = 60.0
    jitter: float = 0.2


class WorkQueue:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff or Backoff()
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ready = asyncio.Condition()
        self._closed = False
        self.retries = 0

    def __len__(self) -> int:
        return len(self._queue)

    def idle(self) -> bool:
        """Nothing queued and nothing being worked on (delayed keys do not count)."""
        return not self._queue and not self._processing

    def add(self, key: str) -> None:
        if self._closed:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._ready:
            self._ready.notify()

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds (an earlier pending timer wins)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        due = loop.time() + max(delay, 0.0)
        if existing is not None:
            if existing.when() <= due:
                return
            existing.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: str) -> float:
        """Re-add a failed key with per-key exponential backoff; returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        base = min(self._backoff.initial_seconds * 2.0 ** (failures - 1), self._backoff.max_seconds)
        delay = base * (1 + random.uniform(-self._backoff.jitter, self._backoff.jitter))  # noqa: S311
        self.retries += 1
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """Clear a key's failure count (it succeeded)."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str | None:
        """The next key to work on, or None once the queue is closed."""
        async with self._ready:
            while not self._queue:
                if self._closed:
                    return None
                await self._ready.wait()
            key = self._queue.popleft()
            self._queued.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        async with self._ready:
            self._ready.notify_all()
