"""A canary folder outside every volume, watched with inotify, and hostile symlinks to it.

The watch reports any open, read, listing, write, attribute change, creation, deletion
or move inside the canary by any process (the daemon included), so "the canary is
never read, written, listed or deleted" is checked directly rather than inferred.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
IN_ALL_EVENTS = 0x00000FFF
EVENT_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)

SECRET = b"canary secret: never read me\n"


class Canary:
    """``root/canary`` with a file and a subfolder; :meth:`assert_untouched` checks it."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "canary"
        self.sub = self.dir / "sub"
        self.secret = self.dir / "secret.txt"
        self.inner = self.sub / "inner.txt"
        self.sub.mkdir(parents=True, exist_ok=True)
        self.secret.write_bytes(SECRET)
        self.inner.write_bytes(SECRET)
        self._fd = -1
        self._snapshot = self._take_snapshot()

    def _take_snapshot(self) -> dict[str, tuple[int, int, int, int]]:
        # lstat generates no inotify event.
        return {
            str(path): (info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns)
            for path in (self.dir, self.sub, self.secret, self.inner)
            for info in [os.lstat(path)]
        }

    def watch(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd = fd
        for path in (self.dir, self.sub):
            if _libc.inotify_add_watch(fd, os.fsencode(path), IN_ALL_EVENTS) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")

    def events(self) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
                start = offset + EVENT_HEADER.size
                name = data[start : start + length].rstrip(b"\0").decode(errors="replace")
                found.append((mask, name))
                offset = start + length

    def assert_untouched(self, what: str = "") -> None:
        events = self.events()
        assert not events, f"canary touched {what}: {[(hex(m), n) for m, n in events]}"
        assert self._take_snapshot() == self._snapshot, f"canary changed {what}"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def plant_links(volume_dir: Path, canary: Canary) -> None:
    """Symlinks inside ``volume_dir`` pointing out at the canary (and a few harmless ones)."""
    (volume_dir / "sub").mkdir(exist_ok=True)
    (volume_dir / "sub" / "real.txt").write_bytes(b"real\n")
    os.symlink(canary.dir, volume_dir / "out")
    os.symlink(canary.secret, volume_dir / "out_file")
    os.symlink(os.path.relpath(canary.dir, volume_dir), volume_dir / "rel")
    os.symlink(canary.sub, volume_dir / "sub" / "deep")
    os.symlink("loop", volume_dir / "loop")
    os.symlink("sub", volume_dir / "inside")
