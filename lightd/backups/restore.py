"""Restores: the backup's archive through the hardened extractor, staged, then swapped in.

The archive bytes are first written to a temporary file, then
:func:`lightd.fs.archive.extract` (the extractor ``decompress`` uses: no traversal, no
link escapes, limits) unpacks them. Without ``truncate`` it extracts into the volume
(files of the backup replace their namesakes, other files stay). With ``truncate`` it
extracts into a staging folder at the volume root, on the volume's own file system (so a
btrfs subvolume or a mounted image keeps its limit), and :mod:`lightd.backups.swap`
swaps the contents entry by entry under a journal: a failed restore leaves the old files,
a killed one the old or the new files, whole, once :func:`recover` has run at start.

A :class:`Tally` (the soft disk accountant's share) hears what the volume gained and
lost: the extracted bytes; with ``truncate`` the staged tree once it is whole (from
then on the old and the restored tree both count, until the swap), then, once the old
tree is removed, its size (measured just before, in the accountant's measure) taken off.
Blocking: run in a worker thread. This module must not know about records or HTTP.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from lightd.backups import swap
from lightd.backups.local import storage_error
from lightd.backups.walk import Meter
from lightd.errors import LightdError
from lightd.fs import ops
from lightd.fs.archive import ArchiveLimits, ExtractReport, extract
from lightd.fs.beneath import Root, closing_fd, lstat_at
from lightd.fs.limits.soft import walk_bytes
from lightd.fs.ops import WRITE_FLAGS, discard, temp_name

# Beside the volumes: where restores of earlier versions staged (swept at start).
STAGING_PREFIX = ".lightd-restore-"
CHUNK = 1024 * 1024


Decode = Callable[[Iterable[bytes]], Iterable[bytes]]


class Tally(Protocol):
    """The volume's accounting of lightd's writes (``DiskLimits.tally`` of the volume)."""

    def begin(self) -> None:
        """A change of the volume follows (its :meth:`wrote` comes after)."""
        ...

    def wrote(self, delta: int) -> None:
        """The volume changed by ``delta`` bytes (apparent size)."""
        ...


class _Untallied:
    def begin(self) -> None:
        return None

    def wrote(self, delta: int) -> None:
        return None


def _counted(source: Iterable[bytes], meter: Meter) -> Iterator[bytes]:
    for chunk in source:
        meter.count(len(chunk))
        yield chunk


def _write_source(
    dir_fd: int,
    name: str,
    source: Iterable[bytes],
    meter: Meter,
    link: Path | None,
    decode: Decode | None,
) -> None:
    if link is not None and decode is None:
        try:  # the stored archive itself, when it is on the same file system (read only)
            os.link(link, name, dst_dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            pass
        else:
            # Progress, and the pace of backups.write_limit_mib_s, as if it were copied.
            left = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
            while left > 0:
                meter.count(min(left, CHUNK))
                left -= CHUNK
            return
    try:
        with closing_fd(os.open(name, WRITE_FLAGS, 0o600, dir_fd=dir_fd)) as fd:
            counted = _counted(source, meter)  # progress counts the stored bytes
            for chunk in decode(counted) if decode is not None else counted:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
    except OSError as exc:
        raise storage_error(exc) from exc


def _extract_here(
    root: Root,
    source: Iterable[bytes],
    meter: Meter,
    limits: ArchiveLimits,
    link: Path | None,
    decode: Decode | None,
) -> ExtractReport:
    temp = temp_name()
    try:
        _write_source(root.fd, temp, source, meter, link, decode)
        meter.check()
        return extract(root, archive=(temp,), destination=(), limits=limits, overwrite=True)
    finally:
        discard(root, temp)


def restore(
    volume_path: Path,
    source: Iterable[bytes],
    *,
    truncate: bool,
    limits: ArchiveLimits,
    meter: Meter,
    token: str,
    link: Path | None = None,
    owner: tuple[int, int] | None = None,
    decode: Decode | None = None,
    tally: Tally | None = None,
) -> None:
    """Restore ``source`` into the volume; with ``truncate`` staged and swapped in.

    ``token`` names the staging entries (the backup id: one restore per volume at a
    time); ``owner`` gets the restored entries; ``decode`` turns the stored bytes into an
    archive the extractor reads (a ``tar.zst`` into its tar); ``tally`` hears what the
    volume gained and lost (see the module), ``limits.disk_room`` being what it may gain.
    """
    tally = tally or _Untallied()
    with Root(volume_path) as root:
        if not truncate:
            report = _extract_here(root, source, meter, limits, link, decode)
            tally.wrote(report.bytes)
            if owner is not None:
                ops.hand_root(root, owner)
            return
        names = swap.Names(token)
        staged = 0  # bytes of the staged tree the tally counts
        swapped = False
        try:
            swap.recover(root)  # a swap an earlier failure left (none, normally)
            swap.clean(root, names)
            os.mkdir(names.staging, 0o700, dir_fd=root.fd)
            with Root(volume_path / names.staging) as staging:
                report = _extract_here(staging, source, meter, limits, link, decode)
                meter.check()
                if owner is not None:
                    ops.hand_root(staging, owner)
            # The restored tree is whole beside the old one: both count from here on.
            tally.begin()  # the swap and the old tree's removal change the volume next
            tally.wrote(report.bytes)
            staged = report.bytes
            meter.check()
            swap.swap_in(root, names)
            swapped = True
            # The replaced tree is inside the volume: it goes before the restore is
            # reported, so a done restore leaves exactly the backup (a kill meanwhile
            # leaves it to the next start).
            replaced = walk_bytes(volume_path / names.old)
            swap.clean(root, names)
            tally.wrote(-replaced)
            staged = 0
            if owner is not None and (os.fstat(root.fd).st_uid, os.fstat(root.fd).st_gid) != owner:
                os.fchown(root.fd, *owner)
        except BaseException as exc:
            with contextlib.suppress(OSError, LightdError):
                swap.clean(root, names)
            # The announced change ends: the staged tree gone again (the old files stay)
            # is off the count; any other state a failure left counts more than is
            # there until a rescan.
            gone = not swapped and lstat_at(root.fd, names.staging) is None
            tally.wrote(-staged if gone else 0)
            if isinstance(exc, OSError):
                raise storage_error(exc) from exc
            raise


def recover(volume_path: Path) -> list[swap.Recovered]:
    """Finish the swaps a killed restore left in one volume (see :mod:`.swap`)."""
    with Root(volume_path) as root:
        return swap.recover(root)


def sweep_staging(volumes_root: Path) -> int:
    """Remove staging folders a restore of an earlier version left beside the volumes."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(volumes_root):
            if name.startswith(STAGING_PREFIX):
                with contextlib.suppress(OSError):
                    shutil.rmtree(volumes_root / name)
                    removed += 1
    return removed
