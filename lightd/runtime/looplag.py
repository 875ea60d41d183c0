"""The event loop's own lag, measured by a task that asks to wake at known times.

A sleeper wakes every ``interval`` seconds; how late it woke is how long the loop was
busy elsewhere (a callback that blocked, a burst of work), and goes to ``observe`` (the
``lightd_event_loop_lag_seconds`` histogram). It must not do any work of its own beyond
the measurement: a monitor that blocks would measure itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("lightd.looplag")

# A lag this long is worth a line in the log (at most one per WARN_EVERY seconds).
WARN_SECONDS = 0.5
WARN_EVERY = 60.0


async def watch_loop_lag(
    observe: Callable[[float], None], *, interval: float = 0.1, warn_seconds: float = WARN_SECONDS
) -> None:
    """Run until cancelled: one lag figure (seconds, never negative) per wake-up."""
    loop = asyncio.get_running_loop()
    warned_at = -WARN_EVERY
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        now = loop.time()
        lag = max(now - asked, 0.0)
        observe(lag)
        if lag >= warn_seconds and now - warned_at >= WARN_EVERY:
            warned_at = now
            log.warning("the event loop was blocked for %.0f ms", lag * 1000)
