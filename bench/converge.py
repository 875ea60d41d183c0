"""Benchmark: time for lightd to converge 30 new containers to running, against two peers.

Each contender brings up the same 30 containers: image ``lightd-test/busybox:latest``,
command ``exec sleep 100000`` through ``/bin/sh -c``, 64 MiB memory (no swap) and
0.25 cpu limits, one port published on 127.0.0.1 (container port = host port), a host
folder at ``/home/container``, no-new-privileges, pids limit 512, ``/tmp`` as a 128 MiB
tmpfs, an init process, json-file logs capped at 2 x 10 MB, stdin open (what lightd's
main containers get). In the same run, in ``--rounds`` rounds (default 3) whose order
rotates (so that no contender always runs first or last; each round's order is
printed), each contender once per round, each on a settled engine: before every turn
the engine lists none of any contender's containers and has sent no container event
for 3 s (the previous turn's removals are finished, not merely asked for):

    docker-py   a plain loop of ``containers.create`` + ``start`` on a thread pool
                (8 workers); time until the last ``start`` returned
    compose     Debian's docker-compose (v1) ``up -d`` on an equivalent compose file
                (30 services, ``network_mode: bridge``); time until it returned
    lightd      POST /containers for all 30 (concurrently), following lightd's node
                watch stream (``/watch``) as a panel does; time from the first POST to
                the event that makes the last one ``state == "running"``

One lightd daemon serves every round; ports are added to its pool and volumes created
(POST /volumes) before any clock starts, as the peers' folders are. The medians of the
rounds are compared. After lightd's last round: its CPU use while idle with its 30
containers running, from /proc/<pid>/stat (utime + stime) over ``--idle-seconds``.

Printed: the median seconds of each contender, the same per container (ms), the
ratios. Targets (at 30, 100 and 300 containers): lightd no slower than docker-compose,
within 1.1x of the docker-py loop; idle CPU under 2% of one core. Compose v1 runs with
``COMPOSE_PARALLEL_LIMIT=1024`` (with more services than its default limit of 64 it
deadlocks). ``--profile FILE`` records lightd's rounds and its idle window with py-spy
(collapsed stacks).
Usage: ``.venv/bin/python bench/converge.py [--count 30] [--rounds 3] [--idle-seconds 20]
[--quick] [--count-calls] [--contenders lightd]`` (``--quick``: 10 containers, one
round). Load-insensitive figures of lightd's rounds are printed too: its CPU seconds per
container, and with ``--count-calls`` its engine calls by kind, per container and while
idle (a counting proxy on the engine's socket, ``bench/_engine_calls.py``).
``--contenders`` runs a subset, for diagnosis only (the ratios need all three).
Every Docker object it makes carries a unique ``lbench-converge-<hex>`` prefix (the
compose project name too) and is removed at the end, also on Ctrl-C. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common as c
import docker
import httpx
import websockets.asyncio.client
from _engine_calls import CallCounter, print_since

COMMAND = "exec sleep 100000"
MEMORY = 64 * c.MIB
CPU = 0.25
WORKERS = 8
# What lightd gives every main container besides the above (lightd/engine/docker.py).
TMPFS_OPTIONS = "rw,exec,nosuid,size=128m"
LOG_CONFIG: dict[str, Any] = {"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}}


def docker_py_run(
    client: docker.DockerClient, prefix: str, ports: list[int], folders: list[Path]
) -> float:
    def one(index: int) -> None:
        port = ports[index]
        container = client.containers.create(
            c.IMAGE,
            command=["/bin/sh", "-c", COMMAND],
            name=f"{prefix}-py-{index:02d}",
            mem_limit=MEMORY,
            memswap_limit=MEMORY,
            nano_cpus=int(CPU * 1e9),
            pids_limit=512,
            security_opt=["no-new-privileges"],
            tmpfs={"/tmp": TMPFS_OPTIONS},
            init=True,
            log_config=LOG_CONFIG,
            stdin_open=True,
            working_dir="/home/container",
            volumes={str(folders[index]): {"bind": "/home/container", "mode": "rw"}},
            ports={f"{port}/tcp": ("127.0.0.1", port)},
            labels={"io.lightd.bench": prefix},
        )
        container.start()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(one, range(len(ports))))
    return time.perf_counter() - started


def compose_file(project: str, ports: list[int], folders: list[Path], path: Path) -> None:
    services: dict[str, Any] = {}
    for index, port in enumerate(ports):
        services[f"c{index:02d}"] = {
            "image": c.IMAGE,
            "command": ["/bin/sh", "-c", COMMAND],
            "mem_limit": MEMORY,
            "memswap_limit": MEMORY,
            "cpus": CPU,
            "pids_limit": 512,
            "security_opt": ["no-new-privileges"],
            "tmpfs": [f"/tmp:{TMPFS_OPTIONS}"],
            "init": True,
            "logging": {"driver": LOG_CONFIG["type"], "options": LOG_CONFIG["config"]},
            "stdin_open": True,
            "working_dir": "/home/container",
            "volumes": [f"{folders[index]}:/home/container"],
            "ports": [f"127.0.0.1:{port}:{port}/tcp"],
            "network_mode": "bridge",
            "labels": {"io.lightd.bench": project},
        }
    # JSON is YAML; compose v1 reads it as such.
    path.write_text(json.dumps({"version": "2.4", "services": services}, indent=1))


def compose(compose_bin: str, project: str, path: Path, *args: str) -> subprocess.CompletedProcess:
    # Compose v1 deadlocks with more services than its parallel limit (64 by default):
    # each service's task holds a slot while it waits for its container's.
    env = {**os.environ, "COMPOSE_PARALLEL_LIMIT": "1024"}
    return subprocess.run(
        [compose_bin, "--no-ansi", "-p", project, "-f", str(path), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


async def lightd_run(daemon: c.DaemonProcess, bodies: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds until every POST answered, and until all are running.

    Follows lightd's node watch stream (``/watch``), as a panel does, rather than
    polling: the clock stops at the event that makes the last container ``running``.
    """
    wanted = {b["internal_id"] for b in bodies}
    running: set[str] = set()
    url = f"{daemon.ws_url}/watch?token={daemon.token}"
    async with (
        websockets.asyncio.client.connect(url, max_size=None) as watch,
        httpx.AsyncClient(
            base_url=daemon.base_url,
            headers=c.headers(daemon),
            timeout=30,
            limits=httpx.Limits(max_connections=WORKERS + 2),
        ) as api,
    ):
        snapshot = json.loads(await watch.recv())
        assert snapshot["event"] == "snapshot", snapshot
        started = time.perf_counter()
        posted = 0.0

        async def post(body: dict[str, Any]) -> None:
            answer = await api.post("/containers", json=body)
            if answer.status_code != 200:
                raise RuntimeError(f"POST /containers {answer.status_code}: {answer.text}")

        async def post_all() -> None:
            nonlocal posted
            await asyncio.gather(*(post(b) for b in bodies))
            posted = time.perf_counter() - started

        posting = asyncio.create_task(post_all())
        try:
            while not wanted <= running:
                frame = json.loads(await asyncio.wait_for(watch.recv(), timeout=300))
                if frame.get("event") != "changed" or frame.get("kind") != "container":
                    continue
                state = (frame.get("object") or {}).get("state")
                if frame["type"] != "DELETED" and state == "running":
                    running.add(frame["id"])
                else:
                    running.discard(frame["id"])
            converged = time.perf_counter() - started
            await posting
            return posted, converged
        finally:
            posting.cancel()


def round_order(round_index: int, contenders: list[str] | None = None) -> list[str]:
    """Contenders of one round, rotated so that none always runs first or last."""
    order = contenders or ["docker-py", "compose", "lightd"]
    shift = round_index % len(order)
    return order[shift:] + order[:shift]


SETTLE_QUIET_SECONDS = 3.0
IDLE_SLICE_SECONDS = 5.0
SETTLE_PATIENCE_SECONDS = 300.0


def settle_engine(client: docker.DockerClient, prefixes: tuple[str, ...]) -> float:
    """Wait until the engine lists none of any contender's containers, then for a quiet
    period with no event about any of them (their removals and the engine's clean-up
    after them are over); seconds waited. Every contender gets the same wait. (Other
    users of a shared engine are not waited for: their events are not ours to judge.)"""
    started = time.monotonic()
    deadline = started + SETTLE_PATIENCE_SECONDS
    while any(c.count_named(client, p) != 0 for p in prefixes):
        if time.monotonic() > deadline:
            print("  engine still lists bench containers; going on", file=sys.stderr)
            return time.monotonic() - started
        time.sleep(0.2)
    while time.monotonic() < deadline:
        since = time.time()
        time.sleep(SETTLE_QUIET_SECONDS)
        events = client.api.events(
            since=since, until=time.time(), filters={"type": "container"}, decode=True
        )
        names = (str((e.get("Actor") or {}).get("Attributes", {}).get("name", "")) for e in events)
        if not any(name.startswith(prefixes) for name in names):
            break
    return time.monotonic() - started


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30, help="containers per contender")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are compared)")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--quick", action="store_true", help="10 containers, one round, 5 s idle window"
    )
    parser.add_argument(
        "--lightd-workers", type=int, help="containers.workers for lightd (default: its own)"
    )
    parser.add_argument(
        "--contenders",
        default="docker-py,compose,lightd",
        help="comma-separated subset to run (diagnosis; the ratios need all three)",
    )
    parser.add_argument(
        "--count-calls",
        action="store_true",
        help="put a counting proxy between lightd and the engine: its calls by kind",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record lightd's rounds with py-spy (pip install py-spy): collapsed stacks",
    )
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds, args.idle_seconds = 10, 1, 5.0
    c.interrupt_on_sigterm()
    compose_bin = c.need_tool("docker-compose", "docker-compose")
    client = c.docker_client()
    c.ensure_image(client)

    prefix = c.unique_prefix("converge")
    project = prefix.replace("-", "")  # compose v1 project names: [a-z0-9]
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    compose_path = work / "docker-compose.yml"
    lightd_prefix = f"lightd-{prefix}-"
    times: dict[str, list[float]] = {"docker-py": [], "compose": [], "lightd": []}
    idle = float("nan")
    env = {}
    if args.lightd_workers:
        env["LIGHTD_CONTAINERS__WORKERS"] = str(args.lightd_workers)
    contenders = [k.strip() for k in args.contenders.split(",") if k.strip()]
    unknown = set(contenders) - set(times)
    if unknown:
        parser.error(f"unknown contenders: {sorted(unknown)}")
    counter: CallCounter | None = None
    if args.count_calls:
        counter = CallCounter(work / "engine.sock").start()
        env["LIGHTD_DOCKER__BASE_URL"] = counter.url
    # Every name any contender gives its containers (all must be gone before a round).
    all_prefixes = (f"{prefix}-py-", lightd_prefix, f"{project}_")
    try:
        folders = []
        for index in range(args.count):
            folder = work / f"home-{index:02d}"
            folder.mkdir()
            folders.append(folder)
        print(
            f"{args.count} containers per contender, {args.rounds} round(s) in rotating "
            f"order; {c.CORES} cores; prefix {prefix}"
        )
        with c.lightd_daemon(prefix, env=env) as daemon:
            # Ports in lightd's pool and volumes are made before any clock starts (the
            # peers' folders exist too); every round uses the same ones.
            ports = c.free_ports(args.count)
            volumes = []
            with daemon.client() as api:
                for port in ports:
                    added = api.post(
                        "/network/ports", json={"ip": "127.0.0.1", "port": port, "protocol": "tcp"}
                    )
                    assert added.status_code == 200, added.text
                    volume = api.post("/volumes")
                    assert volume.status_code == 201, volume.text
                    volumes.append(volume.json()["volume_id"])
            for round_index in range(args.rounds):
                last = round_index == args.rounds - 1
                order = round_order(round_index, contenders)
                print(f"round {round_index + 1} order: {', '.join(order)}")
                for contender in order:
                    settled = settle_engine(client, all_prefixes)
                    print(f"  engine settled in {settled:.1f} s; load {load_average()}")
                    if contender == "docker-py":
                        took = docker_py_run(client, f"{prefix}-py", ports, folders)
                        c.remove_named(client, f"{prefix}-py-")
                    elif contender == "compose":
                        compose_file(project, ports, folders, compose_path)
                        started = time.perf_counter()
                        done = compose(compose_bin, project, compose_path, "up", "-d")
                        took = time.perf_counter() - started
                        compose(compose_bin, project, compose_path, "down", "-t", "0")
                        if done.returncode != 0:
                            print(f"docker-compose up failed:\n{done.stderr}", file=sys.stderr)
                            return 1
                    else:
                        ids = [f"{prefix}-r{round_index}-c{i:02d}" for i in range(args.count)]
                        bodies = [
                            lightd_body(internal_id, volumes[i], ports[i])
                            for i, internal_id in enumerate(ids)
                        ]
                        spy = start_profile(args.profile, daemon, round_index)
                        try:
                            assert daemon.proc is not None
                            calls0 = counter.snapshot() if counter is not None else None
                            cpu0 = c.cpu_seconds(daemon.proc.pid)
                            posted, took = asyncio.run(lightd_run(daemon, bodies))
                            cpu = c.cpu_seconds(daemon.proc.pid) - cpu0
                            stop_profile(spy)
                            print(f"  lightd: all POSTs answered in {posted:.2f} s")
                            print(
                                f"  lightd CPU {cpu:.2f} s over the round: "
                                f"{cpu * 1000 / args.count:.1f} ms/container"
                            )
                            print_since(
                                counter, calls0, args.count, "  lightd's engine calls in the round:"
                            )
                            if last:
                                spy = start_profile(args.profile, daemon, "idle")
                                idle = idle_cpu(
                                    daemon, args.count, args.idle_seconds, counter=counter
                                )
                                stop_profile(spy)
                        finally:
                            removed = c.delete_containers(
                                daemon, client, ids, name_prefix=lightd_prefix
                            )
                            print(
                                f"  lightd deleted its {args.count} containers in {removed:.1f} s"
                            )
                    times[contender].append(took)
                    print(
                        f"round {round_index + 1} {contender:<10} {took:.2f} s "
                        f"(load {load_average()})"
                    )
        report(times, idle, args.count)
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        if compose_path.exists():
            compose(compose_bin, project, compose_path, "down", "-t", "0", "--remove-orphans")
        c.remove_named(client, f"{prefix}-py-")
        c.remove_named(client, lightd_prefix)
        c.remove_named(client, f"{project}_")
        if counter is not None:
            counter.stop()
        shutil.rmtree(work, ignore_errors=True)
        client.close()


def start_profile(
    path: str | None, daemon: c.DaemonProcess, round_index: int | str
) -> subprocess.Popen[bytes] | None:
    """py-spy on the daemon for one lightd round (the round's number added to the name)
    or for the idle window (``-ridle``)."""
    if path is None or daemon.proc is None:
        return None
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(path)
    out = out.with_name(f"{out.stem}-r{round_index}{out.suffix or '.txt'}")
    spy = subprocess.Popen(
        [
            spy_bin,
            "record",
            "--pid",
            str(daemon.proc.pid),
            "--rate",
            "200",
            "--nonblocking",  # the daemon is not paused for each sample
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    return spy


def stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def lightd_body(internal_id: str, volume_id: str, port: int) -> dict[str, Any]:
    return {
        "internal_id": internal_id,
        "image": c.IMAGE,
        "volume_id": volume_id,
        "startup_command": COMMAND,
        "ports": [{"ip": "127.0.0.1", "port": port, "protocol": "tcp"}],
        "limits": {"memory": MEMORY, "cpu": CPU},
        "stop": {"timeout_seconds": 1},
    }


def idle_cpu(
    daemon: c.DaemonProcess, count: int, seconds: float, *, counter: CallCounter | None = None
) -> float:
    """lightd's CPU use (fraction of one core) with its containers running, untouched."""
    assert daemon.proc is not None
    time.sleep(2.0)  # let the last status writes and events settle
    calls0 = counter.snapshot() if counter is not None else None
    meter = c.CpuMeter(daemon.proc.pid)
    slices: list[float] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        part = c.CpuMeter(daemon.proc.pid)
        time.sleep(min(IDLE_SLICE_SECONDS, left))
        slices.append(part.read())
    used = meter.read()
    print(
        f"  lightd CPU per {IDLE_SLICE_SECONDS:.0f} s of the idle window (% of one core): "
        + " ".join(f"{x * 100:.1f}" for x in slices)
    )
    print(
        f"  lightd idle with {count} running: {used * 100:.2f}% of one core over "
        f"{seconds:.0f} s (load {load_average()})"
    )
    print_since(counter, calls0, count, f"  lightd's engine calls while idle ({seconds:.0f} s):")
    return used


def report(times: dict[str, list[float]], idle: float, count: int) -> None:
    lightd, dpy, comp = (c.median(times[k]) for k in ("lightd", "docker-py", "compose"))
    print()
    print(
        f"{'':24}{'median s':>9}{'ms/container':>14}{'lightd/peer':>13}  target        all runs (s)"
    )

    def runs(key: str) -> str:
        return " ".join(f"{t:.2f}" for t in times[key])

    def per(seconds: float) -> str:
        return f"{seconds * 1000 / max(count, 1):>14.0f}"

    print(f"{'lightd':24}{lightd:>9.2f}{per(lightd)}{'':13}{'':15}{runs('lightd')}")
    r_comp = c.ratio(lightd, comp)
    r_dpy = c.ratio(lightd, dpy)
    verdict = f"<= 1.00 {c.verdict(r_comp <= 1.0)}"
    print(
        f"{'docker-compose up -d':24}{comp:>9.2f}{per(comp)}{r_comp:>13.2f}  {verdict:<13}"
        f"{runs('compose')}"
    )
    verdict = f"<= 1.10 {c.verdict(r_dpy <= 1.1)}"
    print(
        f"{'docker-py loop (8 thr)':24}{dpy:>9.2f}{per(dpy)}{r_dpy:>13.2f}  {verdict:<13}"
        f"{runs('docker-py')}"
    )
    pct = idle * 100
    print(f"{'lightd idle CPU':24}{pct:>8.2f}%{'':27}  < 2% {c.verdict(pct < 2)}")


if __name__ == "__main__":
    raise SystemExit(main())
