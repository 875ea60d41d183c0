"""The loop-lag monitor measures a loop that a callback blocks, into lightd's histogram."""

from __future__ import annotations

import asyncio
import time

from lightd.metrics import Metrics
from lightd.runtime.looplag import watch_loop_lag


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def test_a_blocked_loop_shows_in_the_lag_histogram() -> None:
    metrics = Metrics()

    async def scenario() -> tuple[float, float, float, float]:
        monitor = asyncio.create_task(watch_loop_lag(metrics.loop_lag.observe, interval=0.05))
        try:
            await asyncio.sleep(0.3)
            quiet_count = sample(metrics, "lightd_event_loop_lag_seconds_count")
            quiet_sum = sample(metrics, "lightd_event_loop_lag_seconds_sum")
            time.sleep(0.4)  # the point: a callback that blocks the loop
            await asyncio.sleep(0.2)
            return (
                quiet_count,
                quiet_sum,
                sample(metrics, "lightd_event_loop_lag_seconds_count"),
                sample(metrics, "lightd_event_loop_lag_seconds_sum"),
            )
        finally:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)

    quiet_count, quiet_sum, count, total = asyncio.run(scenario())
    assert quiet_count >= 1
    assert count > quiet_count
    # The sleeper asked to wake at most 50 ms into the block: it woke 350 ms late or more.
    assert total - quiet_sum >= 0.3
    below_quarter = sample(metrics, "lightd_event_loop_lag_seconds_bucket", le="0.25")
    assert below_quarter < count, "the blocked wake-up landed in a small bucket"
