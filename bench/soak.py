"""Benchmark: lightd's memory, descriptors and tasks over a long run with churn.

lightd holds ``--documents`` container documents (default 300, ``power: "stopped"``:
their containers are created, none runs) and one container printing ``--rate`` lines per
second (default 20,000; the producer of ``fanout.py``). ``--watchers`` WebSocket
clients (default 100: four in five on the loud container's console, one in five on the
node ``/watch``) each stay connected for 2 to 5 seconds, reading everything, then
reconnect, for ``--minutes`` (default 10).

Printed at the start, once a minute and at the end: lightd's RSS (VmRSS), open file
descriptors (``/proc/<pid>/fd``), asyncio tasks (``lightd_asyncio_tasks`` in
``/metrics``), connections made so far. Targets: RSS growth under 5% after the first
minute, no growth in descriptors or tasks (the figures at the end, once the watchers
are gone, against the first minute's), RSS under 120 MiB.
Usage: ``.venv/bin/python bench/soak.py [--minutes 10] [--documents 300]
[--watchers 100] [--rate 20000]``.
Everything it makes carries a unique ``lbench-soak-<hex>`` prefix and is removed at the
end, also on Ctrl-C. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass

import _common as c
import httpx
from fanout import PRODUCER
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


@dataclass
class Sample:
    minute: str
    rss_kib: int
    fds: int
    tasks: int
    connections: int
    load: float


def fds_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def tasks_of(daemon: c.DaemonProcess) -> int:
    with httpx.Client(base_url=daemon.base_url, headers=c.headers(daemon), timeout=30) as api:
        for line in api.get("/metrics").text.splitlines():
            if line.startswith("lightd_asyncio_tasks "):
                return int(float(line.split()[-1]))
    return -1


class Churn:
    """Watchers that connect, read for a few seconds, close, and connect again."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.connections = 0
        self.refused = 0
        self.frames = 0
        self.stop = asyncio.Event()

    async def one(self, url: str) -> None:
        while not self.stop.is_set():
            stay = random.uniform(2.0, 5.0)
            try:
                async with connect(url, ping_interval=None, max_size=None, open_timeout=30) as ws:
                    self.connections += 1
                    deadline = time.monotonic() + stay
                    while time.monotonic() < deadline and not self.stop.is_set():
                        try:
                            await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic())
                            self.frames += 1
                        except TimeoutError:
                            break
            except (ConnectionClosed, InvalidStatus, OSError, TimeoutError):
                self.refused += 1
                await asyncio.sleep(1.0)

    async def run(self) -> None:
        await asyncio.gather(*(self.one(url) for url in self.urls))


def sample(daemon: c.DaemonProcess, label: str, churn: Churn | None) -> Sample:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    found = Sample(
        minute=label,
        rss_kib=c.rss_kib(pid),
        fds=fds_of(pid),
        tasks=tasks_of(daemon),
        connections=churn.connections if churn else 0,
        load=os.getloadavg()[0],
    )
    print(
        f"{found.minute:>8} {found.rss_kib / 1024:>9.1f} {found.fds:>6} {found.tasks:>6} "
        f"{found.connections:>12} {found.load:>6.1f}",
        flush=True,
    )
    return found


async def soak(args: argparse.Namespace, daemon: c.DaemonProcess, talker: str) -> list[Sample]:
    token = daemon.token
    urls = []
    for index in range(args.watchers):
        if index % 5 == 4:
            urls.append(f"{daemon.ws_url}/watch?token={token}")
        else:
            urls.append(f"{daemon.ws_url}/ws/{talker}?token={token}")
    churn = Churn(urls)
    print(f"{'minute':>8} {'RSS MiB':>9} {'fds':>6} {'tasks':>6} {'connections':>12} {'load':>6}")
    samples = [await asyncio.to_thread(sample, daemon, "start", None)]
    runner = asyncio.create_task(churn.run())
    try:
        for minute in range(1, args.minutes + 1):
            await asyncio.sleep(60)
            samples.append(await asyncio.to_thread(sample, daemon, str(minute), churn))
    finally:
        churn.stop.set()
        await asyncio.wait_for(asyncio.gather(runner, return_exceptions=True), 60)
    await asyncio.sleep(5)  # the server side of the last sockets closes
    samples.append(await asyncio.to_thread(sample, daemon, "end", churn))
    print(f"connections refused or failed: {churn.refused}; frames read: {churn.frames:,}")
    return samples


def create_documents(daemon: c.DaemonProcess, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-doc{i:03d}" for i in range(count)]
    c.post_sleepers(daemon, ids, running=False)
    deadline = time.monotonic() + 600
    with daemon.client() as api:
        while time.monotonic() < deadline:
            listed = api.get("/containers").json()["containers"]
            made = sum(1 for x in listed if x["container_id"] and x["install_state"] == "ready")
            if made >= count:
                return ids
            time.sleep(1.0)
    raise RuntimeError(f"the {count} documents did not all get their container in 600 s")


def report(samples: list[Sample]) -> None:
    first_minute = samples[1] if len(samples) > 2 else samples[0]
    last_minute = samples[-2] if len(samples) > 2 else samples[-1]
    end = samples[-1]
    peak = max(s.rss_kib for s in samples)
    growth = c.ratio(last_minute.rss_kib - first_minute.rss_kib, first_minute.rss_kib)
    print()
    print(
        f"RSS growth after the first minute: {growth * 100:+.1f}% "
        f"(target < 5%) {c.verdict(growth < 0.05)}"
    )
    print(f"RSS peak {peak / 1024:.1f} MiB (target < 120 MiB) {c.verdict(peak < 120 * 1024)}")
    print(
        f"descriptors: start {samples[0].fds}, first minute {first_minute.fds}, "
        f"end {end.fds} {c.verdict(end.fds <= samples[0].fds + 2)}"
    )
    print(
        f"asyncio tasks: start {samples[0].tasks}, first minute {first_minute.tasks}, "
        f"end {end.tasks} {c.verdict(end.tasks <= samples[0].tasks + 2)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--rate", type=int, default=20_000)
    args = parser.parse_args()
    c.interrupt_on_sigterm()
    client = c.docker_client()
    c.ensure_image(client)
    prefix = c.unique_prefix("soak")
    talker = f"{prefix}-talker"
    ids: list[str] = [talker]
    env = {
        "LIGHTD_WEBSOCKET__MAX_SOCKETS_PER_CONTAINER": str(args.watchers + 20),
        "LIGHTD_WEBSOCKET__MAX_WATCH_SOCKETS": str(args.watchers + 20),
    }
    try:
        with c.lightd_daemon(prefix, env=env) as daemon:
            try:
                started = time.monotonic()
                ids.extend(create_documents(daemon, prefix, args.documents))
                with daemon.client() as api:
                    volume_id = api.post("/volumes").json()["volume_id"]
                    answer = api.post(
                        "/containers",
                        json={
                            "internal_id": talker,
                            "image": c.IMAGE,
                            "volume_id": volume_id,
                            "startup_command": PRODUCER.format(rate=args.rate),
                            "limits": {"memory": 64 * c.MIB},
                            "stop": {"timeout_seconds": 1},
                        },
                    )
                    assert answer.status_code == 200, answer.text
                    deadline = time.monotonic() + 120
                    while api.get(f"/containers/{talker}").json()["state"] != "running":
                        if time.monotonic() > deadline:
                            raise RuntimeError("the talker did not reach running in 120 s")
                        time.sleep(0.2)
                print(
                    f"{args.documents} stopped documents and a {args.rate:,} lines/s talker ready "
                    f"in {time.monotonic() - started:.0f} s; {args.watchers} churning watchers; "
                    f"{args.minutes} min; {c.CORES} cores"
                )
                report(asyncio.run(soak(args, daemon, talker)))
            finally:
                took = c.delete_containers(
                    daemon, client, ids, name_prefix=f"lightd-{prefix}", timeout=600
                )
                print(f"deleted the {len(ids)} documents in {took:.1f} s")
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        c.remove_named(client, f"lightd-{prefix}")
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
