"""The journaled swap of a truncating restore, killed with SIGKILL at every kind of point.

A child process runs the real :func:`lightd.backups.swap.swap_in` on a volume holding an
old tree with a staged new tree beside it, and reports each step (journal phase written,
entry moved) on stdout and waits for the test's answer on stdin; the test kills it with
SIGKILL right after a chosen step, then runs the recovery the daemon runs at start
(:func:`lightd.backups.restore.recover`) and checks that the volume holds the old or the
new tree whole (by the journal phase) and nothing else. On a plain folder, and (root only)
on a btrfs subvolume with a qgroup limit and on an ext4 image mounted on the volume folder
(the fixtures of ``tests/limits``, always unmounted and detached).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightd.backups import restore, swap
from lightd.fs.beneath import Root
from lightd.fs.ops import sweep_temp
from tests.backups.conftest import make_tree, snapshot
from tests.limits.conftest import (  # noqa: F401  (fixtures)
    ROOT_ONLY,
    btrfs_mount,
    ext4_mount,
    run,
    tools_present,
)

TOKEN = "3f6d3c52-0000-4000-8000-000000000001"
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lightd.backups import swap
    from lightd.fs.beneath import Root

    real_move, real_journal = swap._move, swap._write_journal

    def step(text):
        print(text, flush=True)
        sys.stdin.readline()  # the test answers, or kills

    def move(*args):
        real_move(*args)
        step("moved")

    def journal(root, names, phase):
        real_journal(root, names, phase)
        step(f"journal {phase}")

    swap._move, swap._write_journal = move, journal
    with Root(Path(sys.argv[1])) as root:
        swap.swap_in(root, swap.Names(sys.argv[2]))
    step("done")
    """
)


def _old_tree(volume: Path) -> None:
    make_tree(volume, files=12, seed=7)
    (volume / "world").mkdir()
    (volume / "world" / "level.dat").write_bytes(b"old world")
    (volume / "only-old.txt").write_text("old")


def _new_tree(folder: Path) -> None:
    make_tree(folder, files=9, seed=8)
    (folder / "world").mkdir()
    (folder / "world" / "level.dat").write_bytes(b"new world")
    (folder / "only-new.txt").write_text("new")


def _stage(volume: Path) -> tuple[dict[str, tuple[object, ...]], dict[str, tuple[object, ...]]]:
    _old_tree(volume)
    old = snapshot(volume)
    staging = volume / swap.Names(TOKEN).staging
    staging.mkdir(mode=0o700)
    _new_tree(staging)
    return old, snapshot(staging)


def _kill_after(volume: Path, steps: int) -> list[str]:
    """Run the swap in a child and SIGKILL it after ``steps`` reported steps."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(volume), TOKEN],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    seen: list[str] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        while True:
            line = child.stdout.readline().strip()
            assert line, f"the swap ended after {seen}"
            seen.append(line)
            if line == "done" or len(seen) >= steps:
                break
            child.stdin.write("\n")
            child.stdin.flush()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    return seen


def _check_kills(volume: Path) -> None:
    """Every kill point: journal out, mid out, journal in, mid in, after the last move."""
    _old_tree(volume)
    entries = len(os.listdir(volume))
    for steps in (1, 2, entries, entries + 1, entries + 2, entries + 4, 100):
        for name in os.listdir(volume):
            path = volume / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        old, new = _stage(volume)
        seen = _kill_after(volume, steps)
        phases = [line for line in seen if line.startswith("journal")]
        recovered = restore.recover(volume)
        left = [name for name in os.listdir(volume) if name.startswith(".lightd-tmp-")]
        if recovered:  # a journal was found: the recovery removed what the swap left
            assert left == [], (steps, seen)
        with Root(volume) as root:
            sweep_temp(root)  # what the daemon runs next at start
        after = snapshot(volume)
        if seen[-1] == "done" or (phases and phases[-1] == "journal in"):
            assert after == new, (steps, seen)
            assert recovered == ([] if seen[-1] == "done" else [swap.Recovered(TOKEN, "new")])
        else:
            assert after == old, (steps, seen)
            assert recovered == ([swap.Recovered(TOKEN, "old")] if phases else [])


def test_kill_at_every_point_of_a_swap_leaves_old_or_new_whole(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    _check_kills(volume)


@ROOT_ONLY
@pytest.mark.skipif(not tools_present("btrfs"), reason="btrfs-progs missing")
def test_kill_mid_swap_in_a_btrfs_subvolume_with_a_qgroup(btrfs_mount: Path) -> None:  # noqa: F811
    volume = btrfs_mount / "volume"
    run("btrfs", "subvolume", "create", str(volume))
    run("btrfs", "qgroup", "limit", "64M", str(volume))
    inode = volume.stat().st_ino
    _check_kills(volume)
    assert volume.stat().st_ino == inode == 256  # still the subvolume's root
    assert "64.00MiB" in run("btrfs", "qgroup", "show", "-re", "--iec", str(btrfs_mount))


@ROOT_ONLY
def test_kill_mid_swap_in_a_mounted_ext4_image(ext4_mount: Path) -> None:  # noqa: F811
    (ext4_mount / "lost+found").rmdir()  # as the image backend does
    device = os.stat(ext4_mount).st_dev
    _check_kills(ext4_mount)
    assert os.stat(ext4_mount).st_dev == device  # still the image's root


@pytest.mark.parametrize("fail_at", [1, 5, 14, 18])
def test_an_error_mid_swap_leaves_the_old_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """A rename that fails (not a kill), while moving out or moving up: the old tree is
    put back and no journal stays."""
    volume = tmp_path / "volume"
    volume.mkdir()
    old, _new = _stage(volume)
    real_move, moves = swap._move, [0]

    def failing(*args: object) -> None:
        moves[0] += 1
        if moves[0] == fail_at:
            raise PermissionError(1, "Operation not permitted")
        real_move(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(swap, "_move", failing)
    with Root(volume) as root, pytest.raises(PermissionError):
        swap.swap_in(root, swap.Names(TOKEN))
    monkeypatch.setattr(swap, "_move", real_move)
    assert not (volume / swap.Names(TOKEN).journal).exists()
    with Root(volume) as root:
        swap.clean(root, swap.Names(TOKEN))
    assert snapshot(volume) == old
