"""The volumes of this node: folders ``<data_dir>/volumes/<uuid>`` and their metadata.

What is on disk is the truth: listing reads the folder, so volumes survive restarts.
``created_at`` is kept in ``<data_dir>/volume-meta/<uuid>.json`` (outside the volume,
where a container cannot edit it); a volume without one reports its folder's mtime.
Ids are validated strictly (full lowercase UUID, or a unique prefix of at least 8
characters). Deleting refuses while ``users_of`` names a container using the volume.
Folders are made, measured and released through the disk limits
(:class:`~lightd.fs.limits.DiskLimits`): a listing reads each volume's usage from its
backend in O(1) (or from the soft accountant's memory), never by walking the tree.

Blocking work runs in threads: light calls through :meth:`run`, long ones (copy,
compress, decompress, tree delete) through :meth:`run_heavy`, a small pool of its own
so they never starve listings and reads. This module must not know about HTTP or
containers beyond the ``users_of`` callable it is given.

A volume can also be deleted off the caller's critical path (:meth:`VolumeManager.discard`):
released from the disk limits, then renamed (atomic, same file system) into
``<volumes>/.lightd-trash/``, which no listing, lookup or disk accounting sees; the tree
is removed later by :meth:`VolumeManager.purge_trash` (in the background, and at every
start for what a killed daemon left there).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from lightd.errors import InvalidField, InvalidRequest, LightdError, VolumeInUse, VolumeNotFound
from lightd.fs import ops
from lightd.fs.archive import ArchiveLimits
from lightd.fs.beneath import Root, translate
from lightd.fs.limits import DiskLimits
from lightd.fs.limits.base import VolumeRef
from lightd.store import DocumentStore

VOLUME_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
VOLUME_REF_RE = re.compile(r"^[0-9a-f][0-9a-f-]{7,35}$")
MIN_PREFIX = 8
TRASH = ".lightd-trash"

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Volume:
    id: str
    path: Path

    @property
    def ref(self) -> VolumeRef:
        return VolumeRef(id=self.id, path=self.path)


@dataclass(frozen=True)
class VolumeInfo:
    id: str
    path: Path
    size: int
    created_at: int
    disk_limit: int | None = None


def no_users(volume_id: str) -> list[str]:
    return []


class VolumeManager:
    """Creates, finds, lists and deletes volumes; opens their roots for file operations."""

    def __init__(
        self,
        root: Path,
        *,
        meta: DocumentStore,
        limits: ArchiveLimits,
        disk: DiskLimits | None = None,
        users_of: Callable[[str], list[str]] = no_users,
        heavy_workers: int = 2,
    ) -> None:
        self.root = root
        self.meta = meta
        self.limits = limits
        self.disk = disk or DiskLimits(
            volumes_root=root, images=root.parent / "volume-images", meta=meta, setting="soft"
        )
        self.users_of = users_of
        self._heavy = ThreadPoolExecutor(heavy_workers, thread_name_prefix="lightd-fs")
        self._purging = threading.Lock()

    # -- threads -------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def run_heavy(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._heavy, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._heavy.shutdown(wait=False, cancel_futures=True)

    # -- identity --------------------------------------------------------------------

    def _ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if VOLUME_ID_RE.fullmatch(name))

    def id_of(self, ref: str) -> str:
        """The id ``ref`` names: a full UUID without a look at the disk (the reconciler
        asks on every pass), a prefix as :meth:`resolve` finds it."""
        lowered = ref.lower()
        if VOLUME_ID_RE.fullmatch(lowered):
            return lowered
        return self.resolve(ref).id

    def resolve(self, ref: str) -> Volume:
        """The volume named by a full UUID or a unique prefix of at least 8 characters."""
        ref = ref.lower()
        if not VOLUME_REF_RE.fullmatch(ref):
            raise InvalidField(
                "volume_id", "must be a volume UUID or a unique prefix of at least 8 characters"
            )
        if VOLUME_ID_RE.fullmatch(ref):
            path = self.root / ref
            if not path.is_dir() or path.is_symlink():
                raise VolumeNotFound()
            return Volume(id=ref, path=path)
        matches = [found for found in self._ids() if found.startswith(ref)]
        if not matches:
            raise VolumeNotFound()
        if len(matches) > 1:
            raise InvalidRequest(f"Ambiguous volume id: {ref} matches {len(matches)} volumes")
        return Volume(id=matches[0], path=self.root / matches[0])

    @contextlib.contextmanager
    def open(self, ref: str) -> Iterator[Root]:
        """The root of a volume, for the functions of :mod:`lightd.fs.ops` and archives."""
        volume = self.resolve(ref)
        with Root(volume.path) as root:
            yield root

    # -- lifecycle -------------------------------------------------------------------

    def refs(self) -> list[VolumeRef]:
        """Every volume as the disk limits see it."""
        return [VolumeRef(id=found, path=self.root / found) for found in self._ids()]

    def create(self, *, disk_limit: int | None = None) -> Volume:
        """A new empty volume, with ``disk_limit`` applied before anything can use it."""
        self.root.mkdir(parents=True, exist_ok=True)
        volume_id = str(uuid.uuid4())
        path = self.root / volume_id
        volume = Volume(id=volume_id, path=path)
        self.disk.make_folder(volume.ref)
        self.meta.write(f"volume-meta/{volume_id}.json", {"created_at": int(time.time())})
        if disk_limit is not None:
            try:
                self.disk.set_limit(volume.ref, disk_limit)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._remove(volume)
                raise
        return volume

    def adopt(self, volume_id: str, staged: Path) -> Volume:
        """Make the folder ``staged`` (same file system) the volume ``volume_id``.

        Used by a transfer's target once every checksum matched; 409 if the id exists.
        """
        if not VOLUME_ID_RE.fullmatch(volume_id):
            raise InvalidField("volume_id", "must be a full lowercase UUID")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / volume_id
        if path.exists():
            raise VolumeInUse(f"Volume {volume_id} already exists on this node")
        staged.chmod(0o755)
        os.rename(staged, path)
        self.meta.write(f"volume-meta/{volume_id}.json", {"created_at": int(time.time())})
        return Volume(id=volume_id, path=path)

    def info(self, volume: Volume) -> VolumeInfo:
        stored = self.meta.read(f"volume-meta/{volume.id}.json")
        created = stored.get("created_at") if isinstance(stored, dict) else None
        if not isinstance(created, int):
            try:
                created = int(volume.path.stat().st_mtime)
            except FileNotFoundError as exc:
                raise VolumeNotFound() from exc
        disk = self.disk.disk(volume.ref)
        return VolumeInfo(
            id=volume.id,
            path=volume.path,
            size=disk.usage,
            created_at=created,
            disk_limit=disk.limit,
        )

    def list(self) -> list[VolumeInfo]:
        found = []
        for volume_id in self._ids():
            with contextlib.suppress(VolumeNotFound):
                found.append(self.info(Volume(id=volume_id, path=self.root / volume_id)))
        return found

    def delete(self, ref: str) -> Volume:
        volume = self.resolve(ref)
        users = self.users_of(volume.id)
        if users:
            raise VolumeInUse(f"Volume is in use by container {', '.join(sorted(users))}")
        self._remove(volume)
        return volume

    def _remove(self, volume: Volume) -> None:
        # Unmount its image or delete its subvolume first; then the folder that is left.
        self.disk.release(volume.ref)
        # rmtree never follows symlinks into the tree on Linux (descriptor-based walk).
        try:
            shutil.rmtree(volume.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise translate(exc, ()) from exc
        self.meta.delete(f"volume-meta/{volume.id}.json")

    def discard(self, ref: str) -> Path | None:
        """Delete a volume without waiting for its tree to be removed.

        As :meth:`delete` (VolumeInUse while a container uses it), but once the disk
        limits released it the folder is renamed into the trash (:data:`TRASH`, in the
        volumes folder, so on the same file system): from then on no listing, lookup or
        disk accounting sees it. Returns the trash entry for :meth:`purge_trash`, or
        None when nothing is left to remove (the backend deleted it, or the rename
        could not be done and the tree was removed in place).
        """
        volume = self.resolve(ref)
        users = self.users_of(volume.id)
        if users:
            raise VolumeInUse(f"Volume is in use by container {', '.join(sorted(users))}")
        self.disk.release(volume.ref)
        trash = self.root / TRASH
        target = trash / f"{volume.id}.{secrets.token_hex(4)}"
        aside: Path | None = target
        try:
            trash.mkdir(mode=0o700, exist_ok=True)
            os.rename(volume.path, target)
        except FileNotFoundError:
            aside = None  # the backend removed it (a btrfs subvolume)
        except OSError:
            # Not renameable there (a project-quota root refuses with EXDEV): in place.
            aside = None
            self._remove_tree(volume.path)
        self.meta.delete(f"volume-meta/{volume.id}.json")
        return aside

    def purge_trash(self) -> int:
        """Remove every tree in the trash (blocking; one purge at a time); how many."""
        trash = self.root / TRASH
        removed = 0
        with self._purging:
            try:
                names = os.listdir(trash)
            except FileNotFoundError:
                return 0
            for name in names:
                with contextlib.suppress(OSError, LightdError):
                    self._remove_tree(trash / name)
                    removed += 1
        return removed

    @staticmethod
    def _remove_tree(path: Path) -> None:
        # rmtree never follows symlinks into the tree on Linux (descriptor-based walk).
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise translate(exc, ()) from exc

    def sweep(self) -> int:
        """Remove temporary entries an interrupted operation left in any volume root."""
        removed = 0
        for volume_id in self._ids():
            with contextlib.suppress(OSError), Root(self.root / volume_id) as root:
                removed += ops.sweep_temp(root)
        return removed
