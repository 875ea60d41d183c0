"""Benchmark: tar.gz compress and extract through lightd's fs code against GNU tar + gzip.

Builds a tree (default about 1 GiB: 10,000 small files and a few large ones, half
random and half text-like data so gzip has real work), then in the same run times:

    GNU tar -czf  vs  lightd.fs.archive.compress(fmt="tar.gz")   (level 6 both)
    GNU tar -xzf  vs  lightd.fs.archive.extract                   (same archive)

and prints both wall times and the ratio lightd / GNU (target: at most 1.25).
Usage: ``.venv/bin/python bench/archive.py [--size-mb 1024] [--small-files 10000]``.
Not a test; nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightd.fs.archive import ArchiveLimits, compress, extract
from lightd.fs.beneath import Root

MIB = 1024 * 1024
LARGE_FILES = 4


def _pattern() -> bytes:
    text = b"".join(
        f"{i:08d} player joined the game at tick {i * 37 % 100000} in world overworld\n".encode()
        for i in range(60_000)
    )
    return os.urandom(4 * MIB) + text[: 4 * MIB]


def build_tree(top: Path, *, size_mb: int, small_files: int) -> int:
    pattern = _pattern()
    small_size = 4096
    written = 0
    for index in range(small_files):
        folder = top / f"d{index % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        start = (index * 7919) % (len(pattern) - small_size)
        (folder / f"f{index:05d}.txt").write_bytes(pattern[start : start + small_size])
        written += small_size
    remaining = max(size_mb * MIB - written, LARGE_FILES * MIB)
    per_file = remaining // LARGE_FILES
    for index in range(LARGE_FILES):
        with (top / f"large{index}.bin").open("wb") as handle:
            left = per_file
            while left > 0:
                piece = pattern[: min(left, len(pattern))]
                handle.write(piece)
                left -= len(piece)
        written += per_file
    return written


def timed(what: Callable[[], object]) -> float:
    started = time.perf_counter()
    what()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="approximate tree size")
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: tmp)")
    args = parser.parse_args()
    for tool in ("tar", "gzip"):
        if shutil.which(tool) is None:
            print(f"{tool} not found; the peer figure needs GNU tar and gzip", file=sys.stderr)
            return 2

    base = Path(tempfile.mkdtemp(prefix="lightd-bench-", dir=args.dir))
    try:
        vol = base / "vol"
        tree = vol / "tree"
        tree.mkdir(parents=True)
        size = build_tree(tree, size_mb=args.size_mb, small_files=args.small_files)
        subprocess.run(["sync"], check=False)
        # Warm the page cache for both contenders alike.
        subprocess.run(["tar", "-cf", "/dev/null", "-C", str(vol), "tree"], check=True)
        print(f"tree: {size / MIB:.0f} MiB, {args.small_files} small files + {LARGE_FILES} large")

        # GNU tar -z runs gzip at its default level, 6, as lightd uses.
        gnu_c = timed(
            lambda: subprocess.run(
                ["tar", "-czf", str(base / "gnu.tar.gz"), "-C", str(vol), "tree"],
                check=True,
            )
        )
        with Root(vol) as root:
            ours_c = timed(
                lambda: compress(
                    root, sources=[("tree",)], output=("ours",), fmt="tar.gz", overwrite=True
                )
            )
        archive = vol / "ours.tar.gz"

        gnu_dest = base / "gnu-out"
        gnu_dest.mkdir()
        gnu_x = timed(
            lambda: subprocess.run(["tar", "-xzf", str(archive), "-C", str(gnu_dest)], check=True)
        )
        limits = ArchiveLimits(max_total_bytes=1 << 40, max_entries=10**7, max_ratio=1e9)
        with Root(vol) as root:
            ours_x = timed(
                lambda: extract(
                    root,
                    archive=("ours.tar.gz",),
                    destination=("ours-out",),
                    limits=limits,
                    overwrite=False,
                )
            )

        print(
            f"archive sizes: GNU {(base / 'gnu.tar.gz').stat().st_size / MIB:.1f} MiB, "
            f"lightd {archive.stat().st_size / MIB:.1f} MiB"
        )
        print(f"{'':12}{'GNU tar':>10}{'lightd':>10}{'ratio':>8}")
        for name, gnu, ours in (("compress", gnu_c, ours_c), ("extract", gnu_x, ours_x)):
            print(f"{name:12}{gnu:>9.2f}s{ours:>9.2f}s{ours / gnu:>8.2f}")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
