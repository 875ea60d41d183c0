"""Console reader logic without an engine: timestamps, resuming, batching, ANSI."""

from __future__ import annotations

from collections import deque

import orjson
import pytest

from lightd.runtime.console import Batch, Console, ConsoleHub, stamp_key, strip_ansi


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (b"2026-11-28T21:50:00.1Z", b"2026-11-28T21:50:00.12Z"),
        (b"2026-11-28T21:50:00.999999999Z", b"2026-11-28T21:50:01Z"),
        (b"2026-11-28T21:50:00Z", b"2026-11-28T21:50:00.000000001Z"),
    ],
)
def test_stamps_order_across_lengths(earlier: bytes, later: bytes) -> None:
    assert stamp_key(earlier) < stamp_key(later)


def console() -> Console:
    return Console(
        internal_id="a", container_id="c", started_at=None, pattern=None, ring=deque(maxlen=10)
    )


def test_resume_skips_lines_already_read() -> None:
    first = console()
    raw = [b"2026-11-28T21:50:00.1Z one", b"2026-11-28T21:50:00.2Z two"]
    assert ConsoleHub._fresh(first, raw, None) == ["one", "two"]
    again = console()
    replay = [*raw, b"2026-11-28T21:50:00.3Z three"]
    assert ConsoleHub._fresh(again, replay, first.last_stamp) == ["three"]


def test_batch_frame_is_encoded_once_and_shared() -> None:
    batch = Batch(("a", "b"))
    assert orjson.loads(batch.frame) == {"event": "console", "data": "a\nb\n"}
    assert batch.frame is batch.frame


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("\x1b[32mDone\x1b[0m", "Done"),
        ("\x1b]0;title\x07Done", "Done"),
        ("\x1b[1;31;40mX\x1b[K", "X"),
        ("plain", "plain"),
    ],
)
def test_ansi_is_stripped(text: str, plain: str) -> None:
    assert strip_ansi(text) == plain


def test_lines_repeated_by_the_engine_are_dropped() -> None:
    reader = console()
    first = [b"2026-11-28T21:50:00.1Z one", b"2026-11-28T21:50:00.2Z two"]
    assert ConsoleHub._fresh(reader, first, None) == ["one", "two"]
    replay = [b"2026-11-28T21:50:00.2Z two", b"2026-11-28T21:50:00.3Z three"]
    assert ConsoleHub._fresh(reader, replay, None) == ["three"]
    other_stream = [b"2026-11-28T21:50:00.25Z late stderr line"]
    assert ConsoleHub._fresh(reader, other_stream, None) == ["late stderr line"]
