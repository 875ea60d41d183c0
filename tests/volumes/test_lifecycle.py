"""Volumes across restarts and kills, and the API's responsiveness during a large compress."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import httpx

from tests.support.daemon import DaemonProcess, wait_for
from tests.volumes.conftest import Vol


def test_volumes_survive_a_restart(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        made = api.post("/volumes").json()
        url = f"/volumes/{made['volume_id']}"
        api.post(f"{url}/files", json={"path": "cfg/a.txt", "content": "kept"})
        before = api.get(url).json()
    fresh_daemon.restart()
    with fresh_daemon.client() as api:
        listed = api.get("/volumes").json()["volumes"]
        assert [v["volume_id"] for v in listed] == [made["volume_id"]]
        assert api.get(url).json()["created_at"] == before["created_at"]
        read = api.get(f"{url}/files/content", params={"path": "cfg/a.txt"})
        assert read.text == "kept"
        assert api.delete(url).status_code == 200
        assert api.get(url).status_code == 404


def test_killed_compress_leaves_no_partial_archive(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        made = api.post("/volumes").json()
        url, path = f"/volumes/{made['volume_id']}", Path(made["path"])
        with (path / "data.bin").open("wb") as handle:
            for _ in range(12):
                handle.write(os.urandom(8 * 1024 * 1024))

        def run() -> None:
            with contextlib.suppress(httpx.HTTPError):
                api.post(f"{url}/compress", json={"output_name": "bk", "format": "tar.xz"})

        worker = threading.Thread(target=run)
        worker.start()
        temps = wait_for(
            lambda: [p for p in path.iterdir() if p.name.startswith(".lightd-tmp-")],
            timeout=10,
            interval=0.02,
            what="the temporary archive",
        )
        fresh_daemon.stop(kill=True)
        worker.join()
        assert not (path / "bk.tar.xz").exists()
        assert temps[0].exists()
    fresh_daemon.start()
    assert not temps[0].exists()
    assert sorted(p.name for p in path.iterdir()) == ["data.bin"]


def test_api_answers_during_a_large_compress(
    api: httpx.Client, daemon: DaemonProcess, volume: Vol
) -> None:
    for index in range(6):
        with (volume.path / f"chunk{index}.bin").open("wb") as handle:
            for _ in range(6):
                handle.write(os.urandom(8 * 1024 * 1024))  # 6 x 48 MiB = 288 MiB
    done = threading.Event()
    result: list[httpx.Response] = []

    def run() -> None:
        with daemon.client() as other:
            result.append(other.post(f"{volume.url}/compress", json={"output_name": "big"}))
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(
        lambda: any(p.name.startswith(".lightd-tmp-") for p in volume.path.iterdir()),
        interval=0.01,
        what="the compress to start",
    )
    slowest = 0.0
    answered_while_running = 0
    while not done.is_set():
        started = time.perf_counter()
        ping = api.get("/api/v1/public/ping")
        listing = api.get(f"{volume.url}/files")
        elapsed = time.perf_counter() - started
        assert ping.status_code == 200
        assert listing.status_code == 200
        if not done.is_set():
            answered_while_running += 1
            slowest = max(slowest, elapsed)
        time.sleep(0.05)
    worker.join()
    assert result[0].status_code == 200, result[0].text
    assert answered_while_running >= 5
    assert slowest < 1.0, f"a ping and a listing took {slowest:.2f}s during the compress"
