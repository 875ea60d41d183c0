"""Wakes file followers when a folder's files change: one shared Linux inotify instance.

The json-file log follower (:mod:`lightd.engine.jsonlog`) sleeps while a container is
quiet; polling every container's log several times a second costs a node with a hundred
quiet servers several percent of a core. :class:`FolderWatch` lets it sleep until the
engine writes, creates or renames a file in the container's folder instead (the watch is
armed only while the follower sleeps, so a busy container's writes cost nothing). One inotify
instance serves the whole process (the kernel allows few instances per user, many
watches), read by one daemon thread that only sets events; a folder watched by several
followers has one watch, counted. Where inotify is missing (another OS, no instances
left) :func:`watch_folder` answers None and the follower polls.

It must not read or interpret the files it watches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import struct
import threading

log = logging.getLogger("lightd.engine")

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
EVENT = struct.Struct("iIII")


class _Inotify:
    """The process's one inotify instance and its reading thread."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._remove = libc.inotify_rm_watch
        self._remove.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._fd = fd
        self._lock = threading.Lock()
        self._wakers: dict[int, list[threading.Event]] = {}  # watch -> its followers
        threading.Thread(target=self._run, name="lightd-inotify", daemon=True).start()

    def add(self, folder: str, waker: threading.Event) -> int:
        with self._lock:
            wd = int(self._add(self._fd, os.fsencode(folder), MASK))
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
            self._wakers.setdefault(wd, []).append(waker)
            return wd

    def discard(self, wd: int, waker: threading.Event) -> None:
        with self._lock:
            wakers = self._wakers.get(wd)
            if wakers is None:
                return
            if waker in wakers:
                wakers.remove(waker)
            if not wakers:
                del self._wakers[wd]
                self._remove(self._fd, wd)  # fails harmlessly if the folder is gone

    def _run(self) -> None:
        while True:
            try:
                select.select([self._fd], [], [])
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError as exc:  # nothing to do but stop waking; followers then poll
                log.warning("inotify reader stopped: %s", exc)
                return
            offset = 0
            woken: set[int] = set()
            gone: set[int] = set()
            overflow = False
            while offset + EVENT.size <= len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
                offset += EVENT.size + length
                overflow = overflow or bool(mask & IN_Q_OVERFLOW)
                (gone if mask & IN_IGNORED else woken).add(wd)
            with self._lock:
                if overflow:  # events were lost: every follower looks again
                    woken.update(self._wakers)
                for wd in woken | gone:
                    for waker in self._wakers.get(wd, ()):
                        waker.set()
                for wd in gone:
                    self._wakers.pop(wd, None)


_shared: _Inotify | None = None
_unavailable = False
_shared_lock = threading.Lock()


class FolderWatch:
    """One follower's watch on one folder, armed only while it sleeps: ``waker`` is set
    when a file there changes while armed. (Armed all the time, a busy container's
    every write would be an event to read.)"""

    def __init__(self, inotify: _Inotify, folder: str) -> None:
        self.waker = threading.Event()
        self._inotify = inotify
        self._folder = folder
        self._wd: int | None = None

    def arm(self) -> bool:
        """Start watching (False: the kernel refused, e.g. no watches left: poll)."""
        self.waker.clear()
        if self._wd is None:
            try:
                self._wd = self._inotify.add(self._folder, self.waker)
            except OSError as exc:
                log.info("cannot watch %s (%s): its console follower polls", self._folder, exc)
                return False
        return True

    def disarm(self) -> None:
        if self._wd is not None:
            self._inotify.discard(self._wd, self.waker)
            self._wd = None

    def close(self) -> None:
        self.disarm()


def watch_folder(folder: str) -> FolderWatch | None:
    """A watch on ``folder``, or None where inotify cannot serve (the caller polls)."""
    global _shared, _unavailable
    with _shared_lock:
        if _shared is None and not _unavailable:
            try:
                _shared = _Inotify()
            except (OSError, AttributeError) as exc:
                _unavailable = True
                log.info("no inotify (%s): console followers poll", exc)
        inotify = _shared
    return None if inotify is None else FolderWatch(inotify, folder)
