"""Benchmark: lightd killed with SIGKILL beside 100 running containers, then started again.

lightd converges ``--count`` containers (default 100; busybox ``exec sleep 100000``,
64 MiB, one port each, as in ``converge.py``) to running; the bench notes each
container's ``State.StartedAt`` from the engine, sends ``SIGKILL`` to lightd, starts it
again on the same folders and measures the time from the new process's start until
``GET /readyz`` answers 200 (the first reconcile of every container has finished and
the engine answers). Then it waits ``--settle`` seconds (default 10, so that any restart
lightd would cause has happened) and counts the containers whose ``StartedAt`` changed
(the engine restarted them) and those not running.

Targets: ready in under 3 s; 0 containers restarted. There is no peer program.
Usage: ``.venv/bin/python bench/restart.py [--count 100] [--settle 10] [--rounds 1]``.
Every container carries a unique ``lbench-restart-<hex>`` prefix and is removed at the
end, also on Ctrl-C. The machine's load average is printed with the figures. Not a test.

lightd runs with its bytecode cached in ``/tmp/<prefix>-pycache`` (written by the first
start, read by the restart), as an installed lightd has it, even when the shell sets
``PYTHONDONTWRITEBYTECODE`` (which would make every start compile every module again).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import _common as c
import docker
import httpx

COMMAND = "exec sleep 100000"


def body(internal_id: str, volume_id: str, port: int) -> dict[str, Any]:
    return {
        "internal_id": internal_id,
        "image": c.IMAGE,
        "volume_id": volume_id,
        "startup_command": COMMAND,
        "ports": [{"ip": "127.0.0.1", "port": port, "protocol": "tcp"}],
        "limits": {"memory": 64 * c.MIB, "cpu": 0.25},
        "stop": {"timeout_seconds": 1},
    }


async def create_all(daemon: c.DaemonProcess, bodies: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(
        base_url=daemon.base_url, headers=c.headers(daemon), timeout=60
    ) as api:
        answers = await asyncio.gather(*(api.post("/containers", json=b) for b in bodies))
        for answer in answers:
            assert answer.status_code == 200, answer.text


def wait_running(daemon: c.DaemonProcess, ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    with daemon.client() as api:
        while time.monotonic() < deadline:
            states = [api.get(f"/containers/{i}").json().get("state") for i in ids]
            if all(state == "running" for state in states):
                return
            time.sleep(1.0)
    raise RuntimeError(f"not all {len(ids)} containers reached running in {timeout:.0f} s")


def started_at(client: docker.DockerClient, name_prefix: str) -> dict[str, tuple[str, bool]]:
    found = client.api.containers(all=True, filters={"name": name_prefix})
    result = {}
    for entry in found:
        name = str(entry["Names"][0]).lstrip("/")
        if not name.startswith(name_prefix) or name.endswith("-install"):
            continue
        state = client.api.inspect_container(entry["Id"])["State"]
        result[name] = (str(state["StartedAt"]), bool(state["Running"]))
    return result


def time_to_ready(daemon: c.DaemonProcess, timeout: float = 120) -> float:
    """Kill lightd with SIGKILL, start it again; seconds from the start until /readyz 200."""
    daemon.stop(kill=True)
    started = time.monotonic()
    daemon.start(timeout=timeout)
    with httpx.Client(base_url=daemon.base_url, timeout=5) as api:
        while time.monotonic() - started < timeout:
            try:
                if api.get("/readyz").status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"lightd was not ready {timeout:.0f} s after its restart")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="kill and start again N times")
    args = parser.parse_args()
    c.interrupt_on_sigterm()
    client = c.docker_client()
    c.ensure_image(client)
    prefix = c.unique_prefix("restart")
    name_prefix = f"lightd-{prefix}-"
    ids = [f"{prefix}-c{i:03d}" for i in range(args.count)]
    pycache = os.path.join(tempfile.gettempdir(), f"{prefix}-pycache")
    bytecode = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": pycache}
    try:
        with c.lightd_daemon(prefix, env=bytecode) as daemon:
            try:
                ports = c.free_ports(args.count)
                volumes = []
                with daemon.client() as api:
                    for port in ports:
                        added = api.post(
                            "/network/ports",
                            json={"ip": "127.0.0.1", "port": port, "protocol": "tcp"},
                        )
                        assert added.status_code == 200, added.text
                        volumes.append(api.post("/volumes").json()["volume_id"])
                started = time.monotonic()
                asyncio.run(
                    create_all(
                        daemon, [body(i, v, p) for i, v, p in zip(ids, volumes, ports, strict=True)]
                    )
                )
                wait_running(daemon, ids)
                print(
                    f"{args.count} containers running after {time.monotonic() - started:.1f} s; "
                    f"{c.CORES} cores, load average {os.getloadavg()[0]:.1f}"
                )
                for round_index in range(args.rounds):
                    before = started_at(client, name_prefix)
                    took = time_to_ready(daemon)
                    time.sleep(args.settle)
                    after = started_at(client, name_prefix)
                    restarted = sum(
                        1
                        for name, (stamp, _) in before.items()
                        if after.get(name, ("",))[0] != stamp
                    )
                    stopped = sum(1 for _, running in after.values() if not running)
                    print(
                        f"round {round_index + 1}: ready {took:.2f} s after the start "
                        f"(target < 3 s) {c.verdict(took < 3.0)}; restarted by the engine "
                        f"{restarted} of {len(before)} (target 0) {c.verdict(restarted == 0)}; "
                        f"not running {stopped}; load average {os.getloadavg()[0]:.1f}"
                    )
            finally:
                removed = c.delete_containers(daemon, client, ids, name_prefix=name_prefix)
                print(f"lightd deleted its {args.count} containers in {removed:.1f} s")
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        c.remove_named(client, name_prefix)
        client.close()
        shutil.rmtree(pycache, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
