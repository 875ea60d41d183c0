"""Pure decisions of disk limits: the backend to use, room for a write, limit changes.

No I/O, no clock, no subprocess: the backends measure, these functions decide, and the
table tests in ``tests/limits/test_decide.py`` pin every case. It must stay pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from lightd.errors import ConfigError, DiskLimitConflict, DiskLimitExceeded

BACKEND_NAMES = ("btrfs", "project", "image", "soft")  # auto's order of preference


@dataclass(frozen=True)
class Probe:
    """What the start-up probe found out about one backend on this machine."""

    name: str
    usable: bool
    reason: str


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose(setting: str, probes: Mapping[str, Probe]) -> Choice:
    """The backend for ``volumes.disk_backend`` given the probes; ConfigError if unusable.

    ``auto`` takes the first usable one of :data:`BACKEND_NAMES` and says why the ones
    before it were passed over; a named backend must be usable (soft always is).
    """
    if setting != "auto":
        probe = probes.get(setting)
        if probe is None or not probe.usable:
            why = probe.reason if probe is not None else "unknown backend"
            raise ConfigError(f"volumes.disk_backend = {setting} cannot be used here: {why}")
        return Choice(setting, f"configured: {probe.reason}")
    passed: list[str] = []
    for name in BACKEND_NAMES:
        probe = probes.get(name)
        if probe is None:
            continue
        if probe.usable:
            why = f"auto: {probe.reason}"
            if passed:
                why += f" (not {'; not '.join(passed)})"
            return Choice(name, why)
        passed.append(f"{name}: {probe.reason}")
    raise ConfigError("no disk backend is usable (soft should always be)")


def room(limit: int | None, usage: int) -> int | None:
    """Bytes a volume may still take; None when it has no limit."""
    if limit is None:
        return None
    return max(limit - usage, 0)


def check_room(*, limit: int | None, usage: int, adding: int) -> None:
    """Raise :class:`DiskLimitExceeded` when ``adding`` more bytes would pass the limit."""
    left = room(limit, usage)
    if left is not None and adding > left:
        raise DiskLimitExceeded()


def over_message(*, limit: int | None, usage: int) -> str | None:
    """The reason a container using the volume is stopped, or None when it is within."""
    if limit is None or usage <= limit:
        return None
    return f"Disk limit exceeded: the volume uses {usage} bytes of its {limit} byte limit"


class Resize(StrEnum):
    SAME = "same"  # nothing to do
    GROW = "grow"  # the image grows now, online
    LOWER = "lower"  # the limit drops: the image shrinks to it (offline only)
    MAKE = "make"  # the volume has no image yet: make one of the limit's size


def image_resize(*, limit: int, usage: int, image_size: int | None) -> Resize:
    """What a new limit means for an image volume; DiskLimitConflict below its usage."""
    if limit < usage:
        raise DiskLimitConflict(
            f"Cannot set the disk limit to {limit} bytes: the volume uses {usage} bytes"
        )
    if image_size is None:
        return Resize.MAKE
    if limit > image_size:
        return Resize.GROW
    if limit < image_size:
        return Resize.LOWER
    return Resize.SAME


def check_shrink(*, limit: int | None, usage: int) -> None:
    """Any backend: a limit below the usage now is refused (409), never applied."""
    if limit is not None and limit < usage:
        raise DiskLimitConflict(
            f"Cannot set the disk limit to {limit} bytes: the volume uses {usage} bytes"
        )


def project_id(volume_id: str) -> int:
    """A volume's quota project id: stable, non-zero, below 2**31 (from its UUID)."""
    digits = volume_id.replace("-", "")
    value = int(digits[:8], 16) & 0x7FFFFFFF
    return value or 1
