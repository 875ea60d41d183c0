"""Benchmark: lightd's backups and restores beside GNU tar, in the same run.

Builds a tree in a volume of a real lightd (default about 1 GiB: 10,000 small files and
a few large ones, half random and half text-like, as ``bench/archive.py``), then times,
each end to end through the API (POST, then polling until ``done``):

    archive backup (tar.gz, level 6)       vs  GNU ``tar czf``     target: at most 1.0x
    restic first backup                    (for reference)
    restic incremental after changing 1 %  vs  GNU ``tar czf``     target: at most 10 %
    archive restore (truncate)             vs  GNU ``tar xzf``

and prints each figure beside its peer with restic's ``data_added``. With ``--fanout``
it measures instead ``bench/fanout.py``'s console fan-out (100 watchers, 20,000
lines/s) on one lightd, quiet and while archive backups of a tree in another volume run
back to back (target: p99 at most 1.5x of the quiet figure): it runs
``bench/fanout.py --beside-backup``. Needs GNU tar,
gzip and restic. Exits 0 whatever the figures. Not a test.

    .venv/bin/python bench/backup.py [--size-mb 1024] [--small-files 10000]
    .venv/bin/python bench/backup.py --fanout [--seconds 15] [--size-mb 512]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import interrupt_on_sigterm, ratio, verdict
from bench.archive import build_tree, timed
from tests.support.daemon import DaemonProcess

MIB = 1024 * 1024


def run(api: httpx.Client, url: str, body: dict[str, Any], *, restore: bool = False) -> float:
    started = time.perf_counter()
    answer = api.post(url, json=body)
    answer.raise_for_status()
    backup_id = answer.json()["backup_id"]
    show = url.rsplit("/restore", 1)[0] if restore else f"{url}/{backup_id}"
    while True:
        record = api.get(show).json()
        part = record["restore"] if restore else record
        if part["state"] != "running":
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if part["state"] != "done":
        raise RuntimeError(f"{'restore' if restore else 'backup'} failed: {part['error']}")
    run.last = record  # type: ignore[attr-defined]
    return elapsed


def change_one_percent(top: Path) -> int:
    files = sorted(p for p in top.rglob("*") if p.is_file())
    step = 100
    changed = 0
    for path in files[::step]:
        data = bytearray(path.read_bytes()[:4096] or b"x")
        data[0] ^= 0xFF
        with path.open("r+b") as handle:
            handle.write(bytes(data[:1]))
        changed += 1
    return changed


def fanout_beside_backups(args: argparse.Namespace) -> int:
    """The fan-out p99, quiet and while backups run: ``bench/fanout.py --beside-backup``."""
    script = Path(__file__).resolve().parent / "fanout.py"
    command = [
        sys.executable, str(script), "--beside-backup", "--seconds", str(args.seconds),
        "--backup-mb", str(args.size_mb), "--backup-small-files", str(args.small_files),
    ]  # fmt: skip
    return subprocess.run(command, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--fanout", action="store_true", help="the fan-out p99 beside backups")
    parser.add_argument("--seconds", type=float, default=15.0, help="fan-out window")
    args = parser.parse_args()
    if args.fanout:
        interrupt_on_sigterm()
        return fanout_beside_backups(args)
    for tool in ("tar", "gzip", "restic"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (deploy/ensure-backup-tools.sh installs restic)")
            return 0
    interrupt_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    daemon = DaemonProcess(root / "d", config={"backups": {"local_dir": str(root / "store")}})
    try:
        daemon.start()
        with daemon.client() as api:
            volume = api.post("/volumes").json()
            top = Path(volume["path"])
            url = f"/volumes/{volume['volume_id']}/backups"
            size = build_tree(top, size_mb=args.size_mb, small_files=args.small_files)
            subprocess.run(["sync"], check=False)
            print(f"tree: {size / MIB:.0f} MiB, {args.small_files} small files + 4 large")
            peer_file = root / "peer.tar.gz"
            tar_czf = timed(
                lambda: subprocess.run(
                    ["tar", "czf", str(peer_file), "-C", str(top), "."], check=True
                )
            )
            archive = run(api, url, {"adapter": "archive"})
            archive_record = run.last  # type: ignore[attr-defined]
            print(
                f"archive backup      lightd {archive:6.2f} s   GNU tar czf {tar_czf:6.2f} s   "
                f"ratio {ratio(archive, tar_czf):.2f} (target <= 1.0: "
                f"{verdict(archive <= tar_czf)})   sizes {archive_record['size'] / MIB:.0f} / "
                f"{peer_file.stat().st_size / MIB:.0f} MiB"
            )
            first = run(api, url, {"adapter": "restic"})
            first_added = run.last["data_added"]  # type: ignore[attr-defined]
            changed = change_one_percent(top)
            incremental = run(api, url, {"adapter": "restic"})
            added = run.last["data_added"]  # type: ignore[attr-defined]
            print(
                f"restic first        lightd {first:6.2f} s   (added {first_added / MIB:.0f} MiB)"
            )
            print(
                f"restic incremental  lightd {incremental:6.2f} s   GNU tar czf {tar_czf:6.2f} s   "
                f"share {incremental / tar_czf:.0%} (target <= 10%: "
                f"{verdict(incremental <= 0.1 * tar_czf)})   {changed} files changed, "
                f"added {added / MIB:.1f} MiB"
            )
            peer_dir = root / "peer-extract"
            peer_dir.mkdir()
            tar_xzf = timed(
                lambda: subprocess.run(
                    ["tar", "xzf", str(peer_file), "-C", str(peer_dir)], check=True
                )
            )
            shutil.rmtree(peer_dir, ignore_errors=True)
            restore_url = f"{url}/{archive_record['backup_id']}/restore"
            restore = run(api, restore_url, {"truncate": True}, restore=True)
            print(
                f"archive restore     lightd {restore:6.2f} s   GNU tar xzf {tar_xzf:6.2f} s   "
                f"ratio {ratio(restore, tar_xzf):.2f}"
            )
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
