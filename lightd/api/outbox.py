"""Per-socket outbound queues and inbound rate limits for WebSockets.

A bounded queue that drops its oldest frames when a client reads too slowly (so a
stalled client never slows the container or other watchers) and remembers that it did,
and a token bucket for inbound messages. Pure asyncio data structures; no I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

DROPPED_NOTICE = "Some output was dropped because this connection reads too slowly"


class Outbox:
    def __init__(self, size: int) -> None:
        self._size = size
        # Frames: an event to encode, or one already encoded (shared by many sockets).
        self._items: deque[dict[str, Any] | str] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self._noticed = False
        self.closing: tuple[int, str] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: dict[str, Any] | str) -> None:
        if self.closing is not None:
            return
        if len(self._items) >= self._size:
            self._items.popleft()
            self.dropped += 1
            if not self._noticed:
                self._noticed = True
                self._items.appendleft({"event": "daemon_message", "data": DROPPED_NOTICE})
                if len(self._items) > self._size:
                    self._items.pop()
        self._items.append(item)
        self._ready.set()

    def close(self, code: int, reason: str, last: dict[str, Any] | None = None) -> None:
        """Send ``last`` ahead of anything queued, then close with ``code``."""
        self._items.clear()
        if last is not None:
            self._items.append(last)
        self.closing = (code, reason)
        self._ready.set()

    async def get(self) -> dict[str, Any] | str | None:
        """The next frame, or None when the socket should close now."""
        while not self._items:
            if self.closing is not None:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class TokenBucket:
    def __init__(self, *, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
