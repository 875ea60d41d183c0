"""Benchmark: lightd's HTTP throughput and tail latency against a minimal Quart app.

In the same run, ``wrk`` (Debian's package) drives each URL with 50 concurrent
keep-alive connections for ``--seconds`` (default 20), with the headers
``Authorization: Bearer <master>`` and ``Accept: application/vnd.pkglatv1+json``:

    minimal   a Quart app answering a fixed JSON body (lightd's ping body), served by
              Hypercorn in one process with lightd's settings (plain asyncio loop,
              keep-alive 75 s, no access log); started by this script in a subprocess
    ping      lightd's ``GET /api/v1/public/ping``
    list      lightd's ``GET /containers`` with 200 container documents (created with
              ``power: "stopped"``: the reconciler creates their Docker containers but
              starts none; the run waits until it is idle)

Printed: requests per second and p99 latency (``wrk --latency``) for each, the ratios
to the minimal app, the errors (non-2xx answers and socket errors), and lightd's RSS
(VmRSS) before (after a short warm-up) and after the runs.
Targets: ping >= 0.8x the minimal app's requests/s; GET /containers with 200 containers
>= 0.5x; no error; RSS after within 10% of before.
With ``--busy`` the bench measures instead how lightd answers while it works: one
client pings ``GET /api/v1/public/ping`` every 20 ms (one request at a time, as a
health checker does) while lightd is idle, while it converges ``--busy-containers``
(default 100) new running containers (from the first POST until all are ``running``),
and while it extracts a 512 MiB ``tar.gz`` (``--archive-mb``; uploaded first, then
``POST /volumes/<id>/decompress``). Printed: p50, p99 and the worst ping of each phase,
and lightd's event-loop lag histogram (``lightd_event_loop_lag_seconds``) per phase.
Target: p99 under 100 ms in the busy phases, printed beside the idle figure.
Usage: ``.venv/bin/python bench/api.py [--seconds 20] [--containers 200] [--quick]
[--busy]``.
The 200 documents (``lbench-api-<hex>-...``) are deleted at the end, also on Ctrl-C.
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common as c

CONNECTIONS = 50
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
PING_BODY = {"status": "ok", "message": "Lightd is running"}


def serve_minimal(port: int) -> None:
    """The peer: Quart + Hypercorn with lightd's server settings, one fixed JSON answer."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    from quart import Quart

    app = Quart("minimal")

    @app.get("/api/v1/public/ping")
    async def ping() -> dict[str, str]:
        return PING_BODY

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("minimal.hypercorn")
    config.keep_alive_timeout = 75
    config.graceful_timeout = 10
    asyncio.run(serve(app, config))


@dataclass
class Result:
    name: str
    rps: float
    p99_ms: float
    p50_ms: float
    requests: int
    non2xx: int
    socket_errors: int
    text: str


def parse_ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not found:
        return float("nan")
    return float(found.group(1)) * UNITS[found.group(2)]


def wrk(wrk_bin: str, name: str, url: str, token: str, seconds: float, threads: int) -> Result:
    done = subprocess.run(
        [
            wrk_bin,
            f"-t{threads}",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "10s",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            f"Accept: {c.VENDOR}",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    text = done.stdout + done.stderr
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return Result(
        name=name,
        rps=float(rps.group(1)) if rps else 0.0,
        p99_ms=parse_ms(p99.group(1)) if p99 else float("nan"),
        p50_ms=parse_ms(p50.group(1)) if p50 else float("nan"),
        requests=int(total.group(1)) if total else 0,
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        text=text,
    )


def start_minimal(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-minimal", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/public/ping").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the minimal Quart app did not start")


def create_documents(daemon: c.DaemonProcess, ids: list[str]) -> None:
    c.post_sleepers(daemon, ids, running=False)
    # Wait until the reconciler is idle: every document has its (stopped) container.
    with daemon.client() as api:
        deadline = time.monotonic() + 300
        while True:
            listed = api.get("/containers").json()["containers"]
            made = sum(1 for x in listed if x["container_id"] and x["install_state"] == "ready")
            if made >= len(ids):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {made} of {len(ids)} containers created in 300 s")
            time.sleep(0.5)


class Prober(threading.Thread):
    """Pings one request at a time every ``every`` seconds; latencies in milliseconds."""

    def __init__(self, url: str, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.every = every
        self.latencies: list[float] = []
        self.errors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=30) as api:
            while not self._stop_event.is_set():
                started = time.perf_counter()
                try:
                    ok = api.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - started
                self.latencies.append(took * 1000)
                self.errors += 0 if ok else 1
                self._stop_event.wait(max(0.0, self.every - took))

    def finish(self) -> list[float]:
        self._stop_event.set()
        self.join(timeout=60)
        return self.latencies


def lag_buckets(daemon: c.DaemonProcess) -> dict[str, float]:
    with daemon.client() as api:
        text = api.get("/metrics").text
    found = {}
    for line in text.splitlines():
        if line.startswith("lightd_event_loop_lag_seconds_bucket"):
            le = re.search(r'le="([^"]+)"', line)
            if le:
                found[le.group(1)] = float(line.split()[-1])
        elif line.startswith("lightd_event_loop_lag_seconds_count"):
            found["count"] = float(line.split()[-1])
    return found


@dataclass
class Phase:
    name: str
    latencies: list[float]
    errors: int
    seconds: float
    lag_over_50ms: float
    lag_over_100ms: float
    lag_samples: float


def probe_while(daemon: c.DaemonProcess, name: str, work: Callable[[], object]) -> Phase:
    lag0 = lag_buckets(daemon)
    prober = Prober(f"{daemon.base_url}/api/v1/public/ping")
    prober.start()
    started = time.monotonic()
    try:
        work()
    finally:
        latencies = prober.finish()
    took = time.monotonic() - started
    lag1 = lag_buckets(daemon)

    def over(bucket: str) -> float:
        total = lag1.get("count", 0) - lag0.get("count", 0)
        return total - (lag1.get(bucket, 0) - lag0.get(bucket, 0))

    return Phase(
        name=name,
        latencies=latencies,
        errors=prober.errors,
        seconds=took,
        lag_over_50ms=over("0.05"),
        lag_over_100ms=over("0.1"),
        lag_samples=lag1.get("count", 0) - lag0.get("count", 0),
    )


def busy_converge(daemon: c.DaemonProcess, prefix: str, count: int) -> list[str]:
    import httpx

    ids = [f"{prefix}-busy{i:03d}" for i in range(count)]
    c.post_sleepers(daemon, ids, running=True, stop_timeout=1)
    deadline = time.monotonic() + 600
    with httpx.Client(base_url=daemon.base_url, headers=c.headers(daemon), timeout=30) as api:
        while time.monotonic() < deadline:
            listed = api.get("/containers").json()["containers"]
            running = sum(1 for x in listed if x["internal_id"] in ids and x["state"] == "running")
            if running >= count:
                return ids
            time.sleep(0.5)
    raise RuntimeError(f"the {count} containers did not all reach running in 600 s")


def busy_archive(daemon: c.DaemonProcess, size_mb: int) -> tuple[str, Callable[[], object]]:
    """A volume holding a ``size_mb`` tar.gz (built with GNU tar, uploaded), and the
    extraction to run while probing."""
    import httpx
    from archive import build_tree

    work = Path(tempfile.mkdtemp(prefix="lbench-api-archive-"))
    try:
        build_tree(work / "tree", size_mb=size_mb, small_files=2000)
        packed = work / "big.tar.gz"
        subprocess.run(["tar", "-czf", str(packed), "-C", str(work), "tree"], check=True)
        with daemon.client() as api:
            volume_id = api.post("/volumes").json()["volume_id"]
        with (
            httpx.Client(base_url=daemon.base_url, headers=c.headers(daemon), timeout=600) as api,
            packed.open("rb") as handle,
        ):
            answer = api.put(
                f"/volumes/{volume_id}/files/content", params={"path": "big.tar.gz"}, content=handle
            )
            assert answer.status_code == 200, answer.text
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def extract() -> None:
        with httpx.Client(base_url=daemon.base_url, headers=c.headers(daemon), timeout=900) as api:
            answer = api.post(
                f"/volumes/{volume_id}/decompress",
                json={"archive_path": "big.tar.gz", "destination": "out"},
            )
            assert answer.status_code == 200, answer.text

    return volume_id, extract


def busy_main(args: argparse.Namespace) -> int:
    client = c.docker_client()
    c.ensure_image(client)
    prefix = c.unique_prefix("api")
    ids: list[str] = []
    try:
        with c.lightd_daemon(prefix) as daemon:
            try:
                print(
                    f"busy: one ping every 20 ms; {c.CORES} cores, "
                    f"load average {os.getloadavg()[0]:.1f}"
                )
                phases = [probe_while(daemon, "idle", lambda: time.sleep(args.seconds))]
                found: list[str] = []
                phases.append(
                    probe_while(
                        daemon,
                        f"converging {args.busy_containers} containers",
                        lambda: found.extend(busy_converge(daemon, prefix, args.busy_containers)),
                    )
                )
                ids.extend(found)
                _volume, extract = busy_archive(daemon, args.archive_mb)
                phases.append(
                    probe_while(daemon, f"extracting a {args.archive_mb} MiB tar.gz", extract)
                )
                print(f"load average after the runs {os.getloadavg()[0]:.1f}")
                busy_report(phases)
            finally:
                took = c.delete_containers(
                    daemon, client, ids, name_prefix=f"lightd-{prefix}", timeout=300
                )
                print(f"deleted the {len(ids)} containers in {took:.1f} s")
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        c.remove_named(client, f"lightd-{prefix}")
        client.close()


def busy_report(phases: list[Phase]) -> None:
    print()
    print(
        f"{'ping while lightd is':36}{'pings':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}{'lag>50ms':>10}{'lag>100ms':>10}  target"
    )
    for index, phase in enumerate(phases):
        lat = phase.latencies
        p99 = c.percentile(lat, 0.99) if lat else float("nan")
        line = (
            f"{phase.name:36}{len(lat):>7}{c.percentile(lat, 0.5) if lat else float('nan'):>9.1f}"
            f"{p99:>9.1f}{max(lat, default=float('nan')):>9.1f}{phase.errors:>8}"
            f"{phase.lag_over_50ms:>10.0f}{phase.lag_over_100ms:>10.0f}"
        )
        if index:
            line += f"  p99 < 100 {c.verdict(p99 < 100)}"
        print(line)
    print("(lag>N: wake-ups of lightd's loop-lag monitor later than N, in that phase)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="wrk duration per URL")
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--quick", action="store_true", help="5 s per URL")
    parser.add_argument("--serve-minimal", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--busy", action="store_true", help="ping latency while lightd works")
    parser.add_argument("--busy-containers", type=int, default=100)
    parser.add_argument("--archive-mb", type=int, default=512)
    args = parser.parse_args()
    if args.serve_minimal:
        serve_minimal(args.serve_minimal)
        return 0
    if args.busy:
        c.interrupt_on_sigterm()
        return busy_main(args)
    if args.quick:
        args.seconds = 5.0
    c.interrupt_on_sigterm()
    wrk_bin = c.need_tool("wrk", "wrk")
    client = c.docker_client()
    c.ensure_image(client)
    prefix = c.unique_prefix("api")
    ids = [f"{prefix}-{i:03d}" for i in range(args.containers)]
    minimal: subprocess.Popen[bytes] | None = None
    try:
        with c.lightd_daemon(prefix) as daemon:
            try:
                assert daemon.proc is not None
                pid = daemon.proc.pid
                started = time.monotonic()
                create_documents(daemon, ids)
                print(
                    f"{args.containers} stopped container documents ready in "
                    f"{time.monotonic() - started:.1f} s; {c.CORES} cores; "
                    f"wrk -t{args.threads} -c{CONNECTIONS} -d{args.seconds:.0f}s"
                )
                (port,) = c.free_ports(1)
                minimal = start_minimal(port)
                token = daemon.token
                ping_url = f"{daemon.base_url}/api/v1/public/ping"
                list_url = f"{daemon.base_url}/containers"
                # Warm-up: first requests, lazy imports, caches; RSS is taken after it.
                for url in (ping_url, list_url):
                    wrk(wrk_bin, "warm-up", url, token, 2, args.threads)
                rss_before = c.rss_kib(pid)
                results = [
                    wrk(
                        wrk_bin,
                        "minimal Quart app",
                        f"http://127.0.0.1:{port}/api/v1/public/ping",
                        token,
                        args.seconds,
                        args.threads,
                    ),
                    wrk(wrk_bin, "lightd ping", ping_url, token, args.seconds, args.threads),
                ]
                cpu = c.CpuMeter(pid)
                results.append(
                    wrk(
                        wrk_bin,
                        f"lightd GET /containers ({args.containers})",
                        list_url,
                        token,
                        args.seconds,
                        args.threads,
                    )
                )
                list_cpu = cpu.read()
                time.sleep(1.0)
                rss_after = c.rss_kib(pid)
                report(results, rss_before, rss_after, list_cpu)
            finally:
                if minimal is not None:
                    minimal.terminate()
                    minimal.wait(timeout=10)
                took = c.delete_containers(
                    daemon, client, ids, name_prefix=f"lightd-{prefix}", timeout=300
                )
                print(f"deleted the {args.containers} documents in {took:.1f} s")
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        if minimal is not None and minimal.poll() is None:
            minimal.kill()
        c.remove_named(client, f"lightd-{prefix}")
        client.close()


def report(results: list[Result], rss_before: int, rss_after: int, list_cpu: float) -> None:
    base = results[0]
    targets = {1: 0.8, 2: 0.5}
    print()
    print(f"{'':36}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ratio':>8}  target")
    for index, r in enumerate(results):
        errors = r.non2xx + r.socket_errors
        line = f"{r.name:36}{r.rps:>10,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{errors:>8}"
        if index in targets:
            share = c.ratio(r.rps, base.rps)
            goal = targets[index]
            line += f"{share:>8.2f}  >= {goal} {c.verdict(share >= goal)}"
        print(line)
    errors = sum(r.non2xx + r.socket_errors for r in results)
    print(f"errors (non-2xx + socket errors) in all runs: {errors} {c.verdict(errors == 0)}")
    for r in results:
        if r.requests == 0 or r.non2xx or r.socket_errors:
            print(f"--- wrk output for {r.name}:\n{r.text}")
    growth = c.ratio(rss_after - rss_before, rss_before)
    print(
        f"lightd RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after "
        f"({growth * 100:+.1f}%; target within 10%) {c.verdict(abs(growth) <= 0.10)}"
    )
    print(f"lightd CPU during GET /containers: {list_cpu * 100:.0f}% of one core")


if __name__ == "__main__":
    raise SystemExit(main())
