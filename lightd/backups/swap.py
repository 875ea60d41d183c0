"""Swap a volume's contents for a restored tree, entry by entry, under a journal.

A truncating restore extracts into a staging folder at the volume root,
``.lightd-tmp-restore-<token>`` (so on the volume's own file system, whatever holds it: a
plain folder, a btrfs subvolume, an image mounted on the folder; the volume root itself is
never replaced, so its limit stays). :func:`swap_in` then, with the journal
``.lightd-tmp-restore-<token>.journal`` (written atomically and synced before each phase):

1. ``out``: every top-level entry of the volume moves into ``.lightd-tmp-restore-<token>.old``;
2. ``in``: every entry of the staging folder moves up to the volume root;
3. the journal is removed; the staging and old folders are garbage (:func:`clean`).

Every move is one ``renameat2(RENAME_NOREPLACE)`` within one file system, so each entry is
whole in one place at any instant. :func:`recover` (at start, before the temp sweep and
before any container) finishes a swap a killed daemon left: journal ``out`` moves the old
entries back (the old files, whole), journal ``in`` moves the rest of the restored entries
up (the new files, whole). Root ``.lightd-tmp-*`` entries are never moved. Blocking: run
in a worker thread. This module must not follow a symlink, know about records or HTTP, or
write anywhere but the volume root it is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
from dataclasses import dataclass
from typing import Literal

from lightd.fs.beneath import DIR_FLAGS, READ_FLAGS, Root, closing_fd, lstat_at
from lightd.fs.ops import WRITE_FLAGS, discard, temp_name
from lightd.fs.paths import TEMP_PREFIX

PREFIX = f"{TEMP_PREFIX}restore-"
JOURNAL_SUFFIX = ".journal"
OLD_SUFFIX = ".old"
RENAME_NOREPLACE = 1
MAX_PASSES = 8

Phase = Literal["out", "in"]
Outcome = Literal["old", "new"]


@dataclass(frozen=True)
class Names:
    """The root entries of one swap."""

    token: str

    @property
    def staging(self) -> str:
        return f"{PREFIX}{self.token}"

    @property
    def old(self) -> str:
        return f"{PREFIX}{self.token}{OLD_SUFFIX}"

    @property
    def journal(self) -> str:
        return f"{PREFIX}{self.token}{JOURNAL_SUFFIX}"


@dataclass(frozen=True)
class Recovered:
    token: str
    outcome: Outcome  # which files the volume holds now


_libc = ctypes.CDLL(None, use_errno=True)


def _move(src_fd: int, name: str, dst_fd: int, new_name: str) -> None:
    """One atomic rename between two folders of one file system; never over an entry."""
    result = _libc.renameat2(
        src_fd, os.fsencode(name), dst_fd, os.fsencode(new_name), RENAME_NOREPLACE
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), name)


def _names(dir_fd: int, *, skip_temp: bool) -> list[str]:
    with os.scandir(dir_fd) as found:
        return sorted(
            item.name for item in found if not (skip_temp and item.name.startswith(TEMP_PREFIX))
        )


def _open_dir(root: Root, name: str) -> int:
    return os.open(name, DIR_FLAGS, dir_fd=root.fd)


def _write_journal(root: Root, names: Names, phase: Phase) -> None:
    """The journal says ``phase``: a new file renamed over the old one, then synced."""
    temp = temp_name()
    try:
        with closing_fd(os.open(temp, WRITE_FLAGS, 0o600, dir_fd=root.fd)) as fd:
            os.write(fd, json.dumps({"token": names.token, "phase": phase}).encode())
            os.fsync(fd)
        os.rename(temp, names.journal, src_dir_fd=root.fd, dst_dir_fd=root.fd)
    except BaseException:
        discard(root, temp)
        raise
    os.fsync(root.fd)


def _read_journal(root: Root, name: str) -> Phase | None:
    try:
        with closing_fd(os.open(name, READ_FLAGS, dir_fd=root.fd)) as fd:
            body = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return None
    phase = body.get("phase") if isinstance(body, dict) else None
    return phase if phase in ("out", "in") else None


def _move_out(root: Root, old_fd: int) -> None:
    """Every top-level entry of the volume into the old folder (again until none is left:
    one a writer made meanwhile goes too)."""
    for _ in range(MAX_PASSES):
        found = _names(root.fd, skip_temp=True)
        if not found:
            return
        for name in found:
            try:
                _move(root.fd, name, old_fd, name)
            except FileNotFoundError:
                continue
            except FileExistsError:  # made again after it moved: keep both, whole
                _move(root.fd, name, old_fd, temp_name())
    raise OSError(errno.EBUSY, "the volume kept changing while its files were replaced")


def _move_up(root: Root, staging_fd: int, old_fd: int) -> None:
    """Every restored entry up to the volume root (one a writer put in its way goes to the
    old folder first)."""
    _move_all_to_root(root, staging_fd, old_fd)


def _move_back(root: Root, old_fd: int) -> None:
    """Every old entry back to the volume root (the old tree wins over a writer's entry)."""
    _move_all_to_root(root, old_fd, old_fd)


def _move_all_to_root(root: Root, from_fd: int, old_fd: int) -> None:
    """Every entry of ``from_fd`` to the volume root; an entry in the way goes to the old
    folder under a temp name first."""
    for name in _names(from_fd, skip_temp=True):
        try:
            _move(from_fd, name, root.fd, name)
        except FileNotFoundError:
            continue
        except FileExistsError:
            _move(root.fd, name, old_fd, temp_name())
            _move(from_fd, name, root.fd, name)


def _move_down(root: Root, staging_fd: int) -> None:
    """Every top-level entry of the volume (restored ones, moved up) back to staging."""
    for name in _names(root.fd, skip_temp=True):
        with contextlib.suppress(FileNotFoundError):
            _move(root.fd, name, staging_fd, name)


def swap_in(root: Root, names: Names) -> None:
    """Make the volume hold exactly what the staging folder holds (see the module)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(names.old, 0o700, dir_fd=root.fd)
    with (
        closing_fd(_open_dir(root, names.staging)) as staging_fd,
        closing_fd(_open_dir(root, names.old)) as old_fd,
    ):
        _write_journal(root, names, "out")
        try:
            _move_out(root, old_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                _move_back(root, old_fd)
                os.unlink(names.journal, dir_fd=root.fd)
            raise
        os.fsync(root.fd)
        _write_journal(root, names, "in")  # from here on a kill leaves the restored tree
        try:
            _move_up(root, staging_fd, old_fd)
        except BaseException:
            # An error (not a kill): back to the old tree if it can be; else the journal
            # stays and the next start moves the rest up.
            with contextlib.suppress(OSError):
                _move_down(root, staging_fd)
                _move_back(root, old_fd)
                os.unlink(names.journal, dir_fd=root.fd)
            raise
        os.fsync(root.fd)
    os.unlink(names.journal, dir_fd=root.fd)
    os.fsync(root.fd)


def clean(root: Root, names: Names) -> None:
    """Remove what a swap leaves (the old tree, the empty staging folder); never the
    journal of a swap still to be recovered."""
    if lstat_at(root.fd, names.journal) is None:
        discard(root, names.old)
        discard(root, names.staging)


def recover(root: Root) -> list[Recovered]:
    """Finish every swap a killed daemon left in this volume, then remove its leftovers."""
    done: list[Recovered] = []
    for entry in _names(root.fd, skip_temp=False):
        if not (entry.startswith(PREFIX) and entry.endswith(JOURNAL_SUFFIX)):
            continue
        names = Names(entry[len(PREFIX) : -len(JOURNAL_SUFFIX)])
        phase = _read_journal(root, entry)
        old_fd = staging_fd = -1
        with contextlib.suppress(OSError):
            old_fd = _open_dir(root, names.old)
        with contextlib.suppress(OSError):
            staging_fd = _open_dir(root, names.staging)
        try:
            if phase == "in" and staging_fd >= 0 and old_fd >= 0:
                _move_up(root, staging_fd, old_fd)
                done.append(Recovered(names.token, "new"))
            elif old_fd >= 0:
                _move_back(root, old_fd)
                done.append(Recovered(names.token, "old"))
            else:  # the journal was written, nothing had moved yet
                done.append(Recovered(names.token, "old"))
        finally:
            for fd in (old_fd, staging_fd):
                if fd >= 0:
                    os.close(fd)
        os.fsync(root.fd)
        os.unlink(entry, dir_fd=root.fd)
        os.fsync(root.fd)
        clean(root, names)
    return done
