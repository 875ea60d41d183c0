"""Test-only pause points of a transfer, so a test can ``kill -9`` it at one.

Some interleavings of the commit step are races a test cannot hit by timing: the source
killed after the target answered ready but before it recorded ``committing``, or after
the target acknowledged the commit but before it recorded ``cleaning``. With
``LIGHTD_TRANSFER_TEST_PAUSE=<point>`` in its environment, a source transfer stops at
that point for good (it logs ``transfer <id>: paused at <point> (test hook)`` first),
until the test kills the daemon. Points: ``ready`` (the target answered ready, nothing
recorded yet), ``committing`` (``committing`` recorded, the commit not sent),
``committed`` (the target acknowledged the commit, ``cleaning`` not recorded),
``trashed`` (the old volume renamed into the trash, its tree not removed yet); and of
a target transfer: ``seeded`` (the install record seeded, the document not written).

Unset (always, outside tests) it costs one environment lookup per point and changes
nothing. A ``DELETE /transfers/<id>`` still cancels a paused transfer.
"""

from __future__ import annotations

import asyncio
import logging
import os

ENV = "LIGHTD_TRANSFER_TEST_PAUSE"
POINTS = frozenset({"ready", "committing", "committed", "trashed", "seeded"})

log = logging.getLogger("lightd.transfer")


async def pause_point(point: str, transfer_id: str) -> None:
    """Wait forever at ``point`` when the environment asks for it; otherwise return."""
    assert point in POINTS, point
    if os.environ.get(ENV) != point:
        return
    log.warning("transfer %s: paused at %s (test hook)", transfer_id, point)
    await asyncio.Event().wait()
