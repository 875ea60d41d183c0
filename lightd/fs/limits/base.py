"""The one small protocol every disk-limit backend implements, and their shared helpers.

A backend holds limits for volumes whose folders lightd made: it may make the folder
itself (a btrfs subvolume), set, change or drop a limit, read the usage in O(1) where the
kernel keeps it (None when it cannot, then the soft accountant answers), attach volumes
at start (mount images) and release them before a delete. Every method is blocking: the
manager calls them in threads. Backends run kernel and CLI calls; they decide nothing
that :mod:`lightd.fs.limits.decide` can decide.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lightd.errors import LightdError

CLI_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class VolumeRef:
    """A volume as a backend sees it: its id and its folder."""

    id: str
    path: Path


class DiskBackend(Protocol):
    name: str
    # The kernel refuses writes past the limit (EDQUOT/ENOSPC) for the container too.
    kernel_enforced: bool

    def make_folder(self, volume: VolumeRef) -> None:
        """Create the (empty) volume folder."""
        ...

    def apply(self, volume: VolumeRef, *, limit: int | None, usage: int, in_use: bool) -> None:
        """Set, change or drop the limit (``usage`` is the volume's usage now)."""
        ...

    def usage(self, volume: VolumeRef) -> int | None:
        """Bytes the volume uses, read in O(1); None when this backend cannot tell."""
        ...

    def measures(self, volume: VolumeRef) -> bool:
        """Cheaply: whether :meth:`usage` answers for this volume (else the accountant)."""
        ...

    def attach(self, volume: VolumeRef, *, limit: int | None) -> None:
        """At start, before anything uses the volume: make it ready (mount its image)."""
        ...

    def release(self, volume: VolumeRef) -> None:
        """Before the volume is deleted: undo what :meth:`attach` and :meth:`apply` did."""
        ...


class CommandFailed(LightdError):
    """A file-system tool answered an error; the message carries its own words."""


PR_SET_PDEATHSIG = 1


def _die_with_lightd() -> None:
    """In the child before exec: killed with SIGKILL when lightd dies (kill -9 included).

    A resize that went on after lightd was killed would race the next start's repair.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run(
    args: Sequence[str], *, timeout: float = CLI_TIMEOUT_SECONDS, ok: tuple[int, ...] = (0,)
) -> str:
    """Run a tool (never through a shell); its stdout, or CommandFailed with its stderr."""
    try:
        done = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=_die_with_lightd,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandFailed(f"{args[0]} failed: {exc}") from exc
    if done.returncode not in ok:
        words = (done.stderr or done.stdout).strip().splitlines()
        last = words[-1] if words else f"exit {done.returncode}"
        raise CommandFailed(f"{args[0]} {args[1] if len(args) > 1 else ''} failed: {last}")
    return done.stdout


def mount_of(path: Path) -> tuple[str, str, str] | None:
    """(mount point, file-system type, source) of the mount ``path`` lies on."""
    best: tuple[str, str, str] | None = None
    target = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        rest = tail.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, rest[0], rest[1])
    return best


def is_mount_point(path: Path) -> bool:
    found = mount_of(path)
    return found is not None and found[0] == str(path.resolve())
