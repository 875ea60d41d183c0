"""GitOps latency: from saving a desired document to the engine showing the change.

Starts its own lightd (tests/support/daemon.py) on a temporary folder and measures, over
20 edits each:

* a memory limit change of a running container (applied live with ``container.update``);
* an image change (the container is re-created; the test image is tagged under a second
  name so no registry is needed);
* a ``git checkout`` that changes the memory limit of 10 documents at once (until all
  10 show it).

Each save is editor-style (temp file in the folder, then rename over). Prints median and
maximum with the targets (median < 500 ms for a limit change, < 1 s for ten documents).
Wings, the usual peer, has no desired-state folder, so there is no peer figure to print.
Cleans up its containers and the extra image tag.

    .venv/bin/python bench/gitops.py [--edits 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import engine
from tests.support.daemon import DaemonProcess

MIB = 1024 * 1024
SECOND_IMAGE = "lightd-test/busybox:bench-gitops"
PREFIX = "bench" + uuid.uuid4().hex[:6]


def save(path: Path, document: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.swp")
    temp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    os.replace(temp, path)


def wait(predicate: Callable[[], bool], *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise TimeoutError("the engine did not show the change in time")


def inspect(internal_id: str) -> dict[str, Any]:
    return engine.inspect(f"lightd-{internal_id}") or {}


def memory_is(internal_id: str, value: int) -> bool:
    return bool(inspect(internal_id).get("HostConfig", {}).get("Memory") == value)


def image_running(internal_id: str, image: str) -> bool:
    found = inspect(internal_id)
    return bool(found and found["Config"]["Image"] == image and found["State"]["Running"])


def git(folder: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@lightd.invalid", *args],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def document(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    volume = str(uuid.uuid4())
    (daemon.data_dir / "volumes" / volume).mkdir(parents=True)
    return {
        "internal_id": f"{PREFIX}-{name}",
        "image": engine.TEST_IMAGE,
        "volume_id": volume,
        "startup_command": "exec sleep 100000",
        "limits": {"memory": 64 * MIB},
        "stop": {"timeout_seconds": 5},
    }


def report(title: str, samples: list[float], target_ms: float) -> None:
    median = statistics.median(samples) * 1000
    worst = max(samples) * 1000
    verdict = "meets" if median < target_ms else "MISSES"
    print(
        f"{title:<38} median {median:7.1f} ms   max {worst:7.1f} ms   "
        f"(target: median < {target_ms:.0f} ms, {verdict})"
    )


def run(edits: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lightd-bench-") as tmp:
        daemon = DaemonProcess(Path(tmp))
        with engine.client() as client:
            client.images.get(engine.TEST_IMAGE).tag(SECOND_IMAGE)
        daemon.start()
        try:
            folder = daemon.desired_dir / "containers"
            folder.mkdir(parents=True, exist_ok=True)

            one = document(daemon, "one")
            one_id = one["internal_id"]
            path = folder / f"{one_id}.json"
            save(path, one)
            wait(lambda: image_running(one_id, engine.TEST_IMAGE))

            limit: list[float] = []
            for index in range(edits):
                value = (80 + index % 2 * 16) * MIB
                one["limits"] = {"memory": value}
                started = time.perf_counter()
                save(path, one)
                wait(lambda value=value: memory_is(one_id, value))
                limit.append(time.perf_counter() - started)

            image: list[float] = []
            for index in range(edits):
                wanted = SECOND_IMAGE if index % 2 == 0 else engine.TEST_IMAGE
                one["image"] = wanted
                started = time.perf_counter()
                save(path, one)
                wait(lambda wanted=wanted: image_running(one_id, wanted))
                image.append(time.perf_counter() - started)
            path.unlink()
            wait(lambda: not inspect(one_id))

            desired = daemon.desired_dir
            ten = [document(daemon, f"ten{index}") for index in range(10)]
            for item in ten:
                save(folder / f"{item['internal_id']}.json", item)
            for item in ten:
                wait(lambda item=item: image_running(item["internal_id"], engine.TEST_IMAGE))
            git(desired, "init", "-q", "-b", "low")
            git(desired, "add", "containers")
            git(desired, "commit", "-q", "-m", "low")
            git(desired, "checkout", "-q", "-b", "high")
            for item in ten:
                item["limits"] = {"memory": 96 * MIB}
                save(folder / f"{item['internal_id']}.json", item)
            git(desired, "commit", "-q", "-am", "high")
            for item in ten:
                wait(lambda item=item: memory_is(item["internal_id"], 96 * MIB))

            checkout: list[float] = []
            for index in range(edits):
                branch, value = ("low", 64 * MIB) if index % 2 == 0 else ("high", 96 * MIB)
                started = time.perf_counter()
                git(desired, "checkout", "-q", branch)
                wait(lambda value=value: all(memory_is(item["internal_id"], value) for item in ten))
                checkout.append(time.perf_counter() - started)

            print(f"lightd GitOps latency, {edits} edits each (save -> engine shows it)")
            report("memory limit change (live update)", limit, 500)
            report("image change (re-create)", image, 1000)
            report("git checkout of 10 documents", checkout, 1000)
            print("peer: none (Wings has no desired-state folder)")
        finally:
            daemon.stop()
            engine.remove_prefixed(PREFIX)
            with engine.client() as client:
                client.images.remove(SECOND_IMAGE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20)
    run(parser.parse_args().edits)


if __name__ == "__main__":
    main()
