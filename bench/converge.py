"""Benchmark: time for lightd to converge 30 new containers to running, against two peers.

Each contender brings up the same 30 containers: image ``lightd-test/busybox:latest``,
command ``exec sleep 100000`` through ``/bin/sh -c``, 64 MiB memory and 0.25 cpu
limits, one port published on 127.0.0.1 (container port = host port), a host folder
at ``/home/container``, no-new-privileges, pids limit 512, ``/tmp`` as tmpfs, stdin
open (what lightd's main containers get). In the same run, one after the other:

    docker-py   a plain loop of ``containers.create`` + ``start`` on a thread pool
                (8 workers); time until the last ``start`` returned
    compose     Debian's docker-compose (v1) ``up -d`` on an equivalent compose file
                (30 services, ``network_mode: bridge``); time until it returned
    lightd      POST /containers for all 30 (concurrently), then GET /containers every
                50 ms; time from the first POST to all ``state == "running"``

Ports are added to lightd's pool and volumes created (POST /volumes) before the clock
starts, as the peers' folders are. Then lightd's CPU use while idle with its 30
containers running, from /proc/<pid>/stat (utime + stime) over ``--idle-seconds``.

Targets: lightd no slower than docker-compose; within 1.3x of the docker-py loop;
idle CPU under 2% of one core.
Usage: ``.venv/bin/python bench/converge.py [--count 30] [--idle-seconds 20] [--quick]``.
Every Docker object it makes carries a unique ``lbench-converge-<hex>`` prefix (the
compose project name too) and is removed at the end, also on Ctrl-C. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
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

COMMAND = "exec sleep 100000"
MEMORY = 64 * c.MIB
CPU = 0.25
WORKERS = 8


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
            nano_cpus=int(CPU * 1e9),
            pids_limit=512,
            security_opt=["no-new-privileges"],
            tmpfs={"/tmp": ""},
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
            "cpus": CPU,
            "pids_limit": 512,
            "security_opt": ["no-new-privileges"],
            "tmpfs": ["/tmp"],
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
    return subprocess.run(
        [compose_bin, "--no-ansi", "-p", project, "-f", str(path), *args],
        capture_output=True,
        text=True,
        check=False,
    )


async def lightd_run(daemon: c.DaemonProcess, bodies: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds until every POST answered, and until all are running."""
    wanted = {b["internal_id"] for b in bodies}
    async with httpx.AsyncClient(
        base_url=daemon.base_url,
        headers=c.headers(daemon),
        timeout=30,
        limits=httpx.Limits(max_connections=WORKERS + 2),
    ) as api:
        started = time.perf_counter()

        async def post(body: dict[str, Any]) -> None:
            answer = await api.post("/containers", json=body)
            if answer.status_code != 200:
                raise RuntimeError(f"POST /containers {answer.status_code}: {answer.text}")

        posted_task = asyncio.gather(*(post(b) for b in bodies))
        posted = 0.0
        deadline = started + 300
        while True:
            if posted_task.done() and not posted:
                posted_task.result()
                posted = time.perf_counter() - started
            listed = (await api.get("/containers")).json()["containers"]
            running = {x["internal_id"] for x in listed if x["state"] == "running"}
            if wanted <= running and posted_task.done():
                posted_task.result()
                posted = posted or time.perf_counter() - started
                return posted, time.perf_counter() - started
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {len(running & wanted)} running after 300 s")
            await asyncio.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30, help="containers per contender")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="10 containers, 5 s idle window")
    parser.add_argument(
        "--lightd-workers", type=int, help="containers.workers for lightd (default: its own, 4)"
    )
    args = parser.parse_args()
    if args.quick:
        args.count, args.idle_seconds = 10, 5.0
    c.interrupt_on_sigterm()
    compose_bin = c.need_tool("docker-compose", "docker-compose")
    client = c.docker_client()
    c.ensure_image(client)

    prefix = c.unique_prefix("converge")
    project = prefix.replace("-", "")  # compose v1 project names: [a-z0-9]
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    compose_path = work / "docker-compose.yml"
    ids = [f"{prefix}-c{i:02d}" for i in range(args.count)]
    lightd_prefix = f"lightd-{prefix}-"
    compose_up = False
    results: dict[str, float] = {}
    try:
        folders = []
        for index in range(args.count):
            folder = work / f"home-{index:02d}"
            folder.mkdir()
            folders.append(folder)
        print(f"{args.count} containers per contender; {c.CORES} cores; prefix {prefix}")

        # 1. docker-py loop on a thread pool.
        ports = c.free_ports(args.count)
        results["docker-py"] = docker_py_run(client, f"{prefix}-py", ports, folders)
        print(f"docker-py loop ({WORKERS} threads): {results['docker-py']:.2f} s")
        c.remove_named(client, f"{prefix}-py-")

        # 2. docker-compose up -d.
        ports = c.free_ports(args.count)
        compose_file(project, ports, folders, compose_path)
        compose_up = True
        started = time.perf_counter()
        done = compose(compose_bin, project, compose_path, "up", "-d")
        results["compose"] = time.perf_counter() - started
        if done.returncode != 0:
            print(f"docker-compose up failed:\n{done.stderr}", file=sys.stderr)
            return 1
        print(f"docker-compose up -d: {results['compose']:.2f} s")
        compose(compose_bin, project, compose_path, "down", "-t", "0", "--remove-orphans")
        compose_up = False

        # 3. lightd.
        env = {}
        if args.lightd_workers:
            env["LIGHTD_CONTAINERS__WORKERS"] = str(args.lightd_workers)
        with c.lightd_daemon(prefix, env=env) as daemon:
            try:
                ports = c.free_ports(args.count)
                bodies = []
                with daemon.client() as api:
                    for index, internal_id in enumerate(ids):
                        added = api.post(
                            "/network/ports",
                            json={"ip": "127.0.0.1", "port": ports[index], "protocol": "tcp"},
                        )
                        assert added.status_code == 200, added.text
                        volume = api.post("/volumes")
                        assert volume.status_code == 201, volume.text
                        bodies.append(
                            {
                                "internal_id": internal_id,
                                "image": c.IMAGE,
                                "volume_id": volume.json()["volume_id"],
                                "startup_command": COMMAND,
                                "ports": [
                                    {"ip": "127.0.0.1", "port": ports[index], "protocol": "tcp"}
                                ],
                                "limits": {"memory": MEMORY, "cpu": CPU},
                                "stop": {"timeout_seconds": 1},
                            }
                        )
                posted, converged = asyncio.run(lightd_run(daemon, bodies))
                results["lightd"] = converged
                print(
                    f"lightd: all POSTs answered in {posted:.2f} s, "
                    f"all running in {converged:.2f} s"
                )

                assert daemon.proc is not None
                time.sleep(2.0)  # let the last status writes and events settle
                meter = c.CpuMeter(daemon.proc.pid)
                time.sleep(args.idle_seconds)
                results["idle"] = meter.read()
                print(
                    f"lightd idle with {args.count} running: {results['idle'] * 100:.2f}% "
                    f"of one core over {args.idle_seconds:.0f} s"
                )
            finally:
                took = c.delete_containers(daemon, client, ids, name_prefix=lightd_prefix)
                print(f"lightd deleted its {args.count} containers in {took:.1f} s")

        lightd, dpy, comp = results["lightd"], results["docker-py"], results["compose"]
        print()
        print(f"{'':24}{'seconds':>9}{'lightd/peer':>13}  target")
        print(f"{'lightd':24}{lightd:>9.2f}")
        r_comp = c.ratio(lightd, comp)
        r_dpy = c.ratio(lightd, dpy)
        print(
            f"{'docker-compose up -d':24}{comp:>9.2f}{r_comp:>13.2f}  <= 1.00 "
            f"{c.verdict(r_comp <= 1.0)}"
        )
        print(
            f"{'docker-py loop (8 thr)':24}{dpy:>9.2f}{r_dpy:>13.2f}  <= 1.30 "
            f"{c.verdict(r_dpy <= 1.3)}"
        )
        idle = results["idle"] * 100
        print(f"{'lightd idle CPU':24}{idle:>8.2f}%{'':13}  < 2% {c.verdict(idle < 2)}")
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        if compose_up or compose_path.exists():
            compose(compose_bin, project, compose_path, "down", "-t", "0", "--remove-orphans")
        c.remove_named(client, f"{prefix}-py-")
        c.remove_named(client, lightd_prefix)
        c.remove_named(client, f"{project}_")
        shutil.rmtree(work, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
