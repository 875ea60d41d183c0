"""What lightd asks of disk limits: each volume's limit, its usage, room for a write.

:class:`DiskLimits` probes the backends at start and picks one (:func:`choose`), keeps
each volume's limit in its metadata document (``volume-meta/<uuid>.json``,
``disk_limit``), reads usage through the backend in O(1) (or from the soft accountant),
keeps the last figures in memory for stats, metrics and the over-limit check, and
answers :meth:`DiskLimits.check` for every lightd writer before it writes. Every method
is blocking (callers run them in threads) except the cache reads. It must not know
about HTTP, containers or the engine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lightd.fs.limits import btrfs, image, project, soft
from lightd.fs.limits.base import DiskBackend, VolumeRef
from lightd.fs.limits.decide import Choice, Probe, check_room, check_shrink, choose, over_message
from lightd.store import DocumentStore

log = logging.getLogger("lightd.limits")


@dataclass(frozen=True)
class VolumeDisk:
    limit: int | None
    usage: int


@dataclass(frozen=True)
class VolumeTally:
    """One volume's share of the soft accountant: ``begin`` announces a change (a walk
    meanwhile is dropped), ``wrote`` adds it."""

    accountant: soft.Accountant
    volume_id: str

    def begin(self) -> None:
        self.accountant.begin(self.volume_id)

    def wrote(self, delta: int) -> None:
        self.accountant.add(self.volume_id, delta)


@dataclass(frozen=True)
class DiskStatus:
    backend: str
    reason: str
    kernel_enforced: bool
    probes: tuple[Probe, ...]


def probe_all(volumes_root: Path) -> dict[str, Probe]:
    """Every backend's probe on this machine (blocking: runs tools)."""
    found = {
        "btrfs": btrfs.probe(volumes_root),
        "project": project.probe(volumes_root),
        "image": image.probe(),
        "soft": soft.probe(),
    }
    return found


def build_backend(name: str, *, volumes_root: Path, images: Path) -> DiskBackend:
    if name == "btrfs":
        return btrfs.BtrfsBackend()
    if name == "image":
        return image.ImageBackend(images)
    if name == "project":
        return project.ProjectBackend(volumes_root)
    return soft.SoftBackend()


class DiskLimits:
    def __init__(
        self,
        *,
        volumes_root: Path,
        images: Path,
        meta: DocumentStore,
        setting: str = "auto",
        rescan_seconds: float = 60.0,
        entries_per_second: int = 20_000,
    ) -> None:
        self.volumes_root = volumes_root
        self.images = images
        self.meta = meta
        self.setting = setting
        self.backend: DiskBackend = soft.SoftBackend()
        self.status = DiskStatus("soft", "not probed yet", False, ())
        self.accountant = soft.Accountant(
            rescan_seconds=rescan_seconds, entries_per_second=entries_per_second
        )
        self._limits: dict[str, int | None] = {}
        self._usage: dict[str, int] = {}
        self._over: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.on_over_changed: Callable[[str], None] = lambda _volume_id: None

    # -- start -----------------------------------------------------------------------

    def probe(self) -> Choice:
        """Pick the backend (blocking); ConfigError when a named one cannot work here."""
        self.volumes_root.mkdir(parents=True, exist_ok=True)
        probes = probe_all(self.volumes_root)
        choice = choose(self.setting, probes)
        self.backend = build_backend(
            choice.name, volumes_root=self.volumes_root, images=self.images
        )
        self.status = DiskStatus(
            choice.name, choice.reason, self.backend.kernel_enforced, tuple(probes.values())
        )
        log.info("disk limits: %s (%s)", choice.name, choice.reason)
        return choice

    def attach_all(self, volumes: Iterable[VolumeRef]) -> int:
        """Before anything uses a volume: mount images, restore qgroups. Returns how many."""
        done = 0
        for volume in volumes:
            try:
                self.backend.attach(volume, limit=self.limit(volume.id))
                done += 1
            except Exception:
                log.exception("disk limits: could not attach volume %s", volume.id)
        return done

    def start_accounting(self, volumes: Callable[[], Iterable[VolumeRef]]) -> None:
        def walked(volume_id: str) -> None:
            self._recheck(volume_id, self.accountant.usage(volume_id))

        def unmeasured() -> list[VolumeRef]:
            # Only volumes the backend cannot measure are walked (never btrfs subvolumes,
            # images or project-quota folders).
            return [volume for volume in volumes() if not self.backend.measures(volume)]

        self.accountant.on_walked = walked
        self.accountant.start(unmeasured)

    def stop(self) -> None:
        self.accountant.stop()

    # -- limits ----------------------------------------------------------------------

    def _lock(self, volume_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(volume_id, threading.Lock())

    def limit(self, volume_id: str) -> int | None:
        if volume_id not in self._limits:
            stored = self.meta.read(f"volume-meta/{volume_id}.json")
            value = stored.get("disk_limit") if isinstance(stored, dict) else None
            self._limits[volume_id] = value if isinstance(value, int) else None
        return self._limits[volume_id]

    def set_limit(self, volume: VolumeRef, limit: int | None, *, in_use: bool = False) -> None:
        """Apply and store a new limit; DiskLimitConflict when the volume cannot take it."""
        with self._lock(volume.id):
            if limit == self.limit(volume.id):
                return
            usage = self.usage(volume)
            check_shrink(limit=limit, usage=usage)
            self.backend.apply(volume, limit=limit, usage=usage, in_use=in_use)
            stored = self.meta.read(f"volume-meta/{volume.id}.json")
            document = dict(stored) if isinstance(stored, dict) else {}
            document["disk_limit"] = limit
            self.meta.write(f"volume-meta/{volume.id}.json", document)
            self._limits[volume.id] = limit
            self._recheck(volume.id, self.usage(volume))

    # -- usage -----------------------------------------------------------------------

    def usage(self, volume: VolumeRef) -> int:
        """Bytes the volume uses now: the backend's O(1) figure, else the accountant's."""
        measured = self.backend.usage(volume)
        value = measured if measured is not None else self.accountant.usage(volume.id)
        self._usage[volume.id] = value
        return value

    def disk(self, volume: VolumeRef) -> VolumeDisk:
        return VolumeDisk(limit=self.limit(volume.id), usage=self.usage(volume))

    def cached(self, volume_id: str) -> VolumeDisk | None:
        """The last figures read (no I/O): for stats events, metrics and the planner."""
        usage = self._usage.get(volume_id)
        if usage is None:
            return None
        return VolumeDisk(limit=self._limits.get(volume_id), usage=usage)

    def all_cached(self) -> dict[str, VolumeDisk]:
        return {
            key: VolumeDisk(self._limits.get(key), value)
            for key, value in list(self._usage.items())
        }

    def over(self, volume_id: str) -> str | None:
        """Why containers of the volume must stop (its usage is past its limit), or None."""
        return self._over.get(volume_id)

    def refresh(self, volumes: Iterable[VolumeRef]) -> None:
        """Read every volume's usage into the cache (blocking; O(1) each but soft's)."""
        for volume in volumes:
            try:
                self.limit(volume.id)
                self._recheck(volume.id, self.usage(volume))
            except Exception:
                log.exception("disk usage of %s could not be read", volume.id)

    def _recheck(self, volume_id: str, usage: int) -> None:
        message = over_message(limit=self.limit(volume_id), usage=usage)
        before = self._over.get(volume_id)
        if message is None:
            self._over.pop(volume_id, None)
        else:
            self._over[volume_id] = message
        if (before is None) != (message is None):
            self.on_over_changed(volume_id)

    # -- writers ---------------------------------------------------------------------

    def room(self, volume: VolumeRef) -> int | None:
        """Bytes a writer may still add (None: no limit); the writer then calls :meth:`wrote`.

        Asking announces a write to the soft accountant, which drops a walk that
        overlapped it (see :mod:`lightd.fs.limits.soft`).
        """
        self.accountant.begin(volume.id)
        limit = self.limit(volume.id)
        if limit is None:
            return None
        return max(limit - self.usage(volume), 0)

    def check(self, volume: VolumeRef, adding: int) -> None:
        """Raise DiskLimitExceeded when ``adding`` bytes would pass the volume's limit.

        A write that passes is announced to the soft accountant, as :meth:`room` does.
        """
        limit = self.limit(volume.id)
        if limit is not None:
            check_room(limit=limit, usage=self.usage(volume), adding=adding)
        self.accountant.begin(volume.id)

    def wrote(self, volume_id: str, delta: int) -> None:
        """lightd changed the volume by ``delta`` bytes (the soft accountant's share)."""
        self.accountant.add(volume_id, delta)

    def tally(self, volume_id: str) -> VolumeTally:
        """:meth:`wrote` bound to one volume, and the announcement of a change that
        follows, for a writer that changes the volume in steps (a truncating restore)."""
        return VolumeTally(self.accountant, volume_id)

    # -- lifecycle -------------------------------------------------------------------

    def make_folder(self, volume: VolumeRef) -> None:
        self.backend.make_folder(volume)
        self.accountant.add(volume.id, 0)
        self._limits[volume.id] = None
        self._usage[volume.id] = 0

    def release(self, volume: VolumeRef) -> None:
        self.backend.release(volume)
        self.accountant.forget(volume.id)
        self._usage.pop(volume.id, None)
        self._limits.pop(volume.id, None)
        self._over.pop(volume.id, None)
