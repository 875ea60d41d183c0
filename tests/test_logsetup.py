"""Log batching: the flusher is woken once per batch, and only when lines wait."""

from __future__ import annotations

from lightd import logsetup


def test_flusher_is_woken_once_per_batch_of_lines() -> None:
    wakes: list[int] = []
    logsetup.set_flush_waker(lambda: wakes.append(1))
    try:
        logsetup.flush_logs()
        assert wakes == []  # nothing written: nobody is woken
        for _ in range(3):
            logsetup._written()
        assert wakes == [1]
        logsetup.flush_logs()
        logsetup._written()
        assert wakes == [1, 1]
    finally:
        logsetup.set_flush_waker(None)
        logsetup.flush_logs()
