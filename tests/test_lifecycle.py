"""Process lifecycle: clean shutdown on SIGTERM and SIGINT, in-flight requests finish."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import DaemonProcess


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0(tmp_path: Path, signum: int) -> None:
    proc = DaemonProcess(tmp_path / "d").start()
    assert proc.proc is not None
    process = proc.proc
    process.send_signal(signum)
    assert process.wait(timeout=20) == 0
    assert "Traceback" not in proc.log()
    assert "lightd stopped" in proc.log()
    proc.proc = None


def test_in_flight_request_finishes_during_shutdown(tmp_path: Path) -> None:
    proc = DaemonProcess(tmp_path / "d").start()
    try:
        results: list[int] = []
        started = threading.Event()

        def slow_upload() -> None:
            def body():  # type: ignore[no-untyped-def]
                yield b'{"ttl": "1h",'
                started.set()
                import time

                time.sleep(1.0)
                yield b' "remove_on_use": false}'

            with proc.client() as api:
                results.append(api.post("/auth/tokens", content=body()).status_code)

        worker = threading.Thread(target=slow_upload)
        worker.start()
        assert started.wait(10)
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        worker.join(20)
        assert results == [200]
        assert proc.proc.wait(timeout=20) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{proc.base_url}/api/v1/public/ping", timeout=2)
    finally:
        proc.stop()
