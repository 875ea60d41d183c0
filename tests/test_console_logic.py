"""Console reader logic without an engine: timestamps, resuming, batching, ANSI."""

from __future__ import annotations

from collections import deque

import orjson
import pytest

from lightd.engine.fake import FakeEngine
from lightd.runtime.console import Batch, Console, ConsoleHub, stamp_key, stamp_ns, strip_ansi


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


def texts(reader: Console, raw: list[bytes]) -> list[str]:
    return [text for _at, text in ConsoleHub._fresh(reader, raw)]


def test_resume_skips_lines_already_read() -> None:
    reader = console()
    raw = [b"2026-11-28T21:50:00.1Z one", b"2026-11-28T21:50:00.2Z two"]
    assert texts(reader, raw) == ["one", "two"]
    # A resumed stream starts a second before the newest line: only the new one passes.
    replay = [b"2026-11-28T21:49:59.5Z older", *raw, b"2026-11-28T21:50:00.3Z three"]
    assert texts(reader, replay) == ["three"]
    assert reader.repeats_skipped == 3


def test_a_repeat_far_behind_the_newest_line_is_skipped() -> None:
    reader = console()
    assert texts(reader, [b"2026-11-28T21:50:03Z 178199"]) == ["178199"]
    assert texts(reader, [b"2026-11-28T21:50:00Z 119115"]) == []


def test_distinct_lines_with_one_stamp_both_pass() -> None:
    reader = console()
    same = [b"2026-11-28T21:50:00.1Z one", b"2026-11-28T21:50:00.1Z two"]
    assert texts(reader, same) == ["one", "two"]
    assert texts(reader, same) == []


@pytest.mark.parametrize(
    ("stamp", "nanoseconds"),
    [
        pytest.param(b"1970-01-01T00:00:01Z", 1_000_000_000, id="whole-second"),
        pytest.param(b"1970-01-01T00:00:00.5Z", 500_000_000, id="short-fraction"),
        pytest.param(b"1970-01-01T00:00:00.000000001Z", 1, id="nanoseconds"),
        pytest.param(b"garbage", 0, id="unreadable-is-zero"),
    ],
)
def test_stamps_read_as_nanoseconds(stamp: bytes, nanoseconds: int) -> None:
    assert stamp_ns(stamp) == nanoseconds


def hub(throttle_lines: int) -> ConsoleHub:
    return ConsoleHub(
        FakeEngine(),
        throttle_lines=throttle_lines,
        throttle_window_seconds=0.1,
        on_match=lambda key, cid: None,
        on_end=lambda key: None,
    )


def spaced(count: int, every_ns: int) -> list[tuple[int, str]]:
    return [(index * every_ns, f"l{index}") for index in range(count)]


@pytest.mark.parametrize(
    ("lines", "kept", "notices"),
    [
        pytest.param(spaced(5000, 1_000_000), 5000, 0, id="a-backlog-written-slowly-passes-whole"),
        pytest.param(spaced(500, 0), 200, 1, id="a-burst-over-twice-the-limit-is-cut-once"),
        pytest.param(spaced(200, 0), 200, 0, id="a-burst-of-twice-the-limit-passes"),
    ],
)
def test_throttle_judges_the_containers_own_time(
    lines: list[tuple[int, str]], kept: int, notices: int
) -> None:
    # 100 lines per 100 ms: 1 line per millisecond of the container's time.
    admitted = hub(100)._admit(console(), lines)
    shown = [line for line in admitted if not line.startswith("[lightd]")]
    assert len(shown) == kept
    assert shown == [text for _at, text in lines][:kept]
    assert len(admitted) - len(shown) == notices


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
    assert texts(reader, first) == ["one", "two"]
    replay = [b"2026-11-28T21:50:00.2Z two", b"2026-11-28T21:50:00.3Z three"]
    assert texts(reader, replay) == ["three"]
    other_stream = [b"2026-11-28T21:50:00.25Z late stderr line"]
    assert texts(reader, other_stream) == ["late stderr line"]
