"""Watches the desired-state folder and turns file events into hints.

Every batch of file events (an editor's temp-and-rename, a ``git checkout`` of many
files) is only a hint to call ``on_change`` once, which re-reads the folder; a full
rescan also runs every ``rescan_seconds`` because the kernel can drop events. When the
folder is removed (or replaced by another one) watchfiles keeps waiting on the old inode
and never sees it again, so the watcher compares the folder's identity after every batch
and every timeout, and starts watching again once the folder is back.

lightd's own temp files (``*.lightd-tmp``), ``.git`` and the generated ``schema/``
folder are ignored. It must not interpret documents or decide anything: it only says
"look again".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from lightd.store.documents import TEMP_SUFFIX

log = logging.getLogger("lightd.watch")
# watchfiles logs every batch at INFO; lightd logs what the batch changed instead.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

OnChange = Callable[[str], Awaitable[None]]
"""Called with the reason of the look ("files changed", "rescan", "folder back", ...)."""

IGNORED_FOLDERS = ("schema",)
# The reason of a look after file events ends with this: a look that may trust the
# files' identities (the periodic rescan and every other look read every file).
FILE_EVENTS = "file events"


@dataclass(frozen=True)
class WatchSettings:
    rescan_seconds: float = 30.0
    debounce_ms: int = 50
    force_polling: bool = False
    missing_poll_seconds: float = 0.5
    # How long the watch thread waits before it looks at the folder's identity again.
    identity_check_ms: int = 5000


class DesiredFilter(DefaultFilter):
    """watchfiles' default filter, plus lightd's temp files and the schema folder."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self._ignored = tuple(str(root / name) for name in IGNORED_FOLDERS)

    def __call__(self, change: Change, path: str) -> bool:
        if path.endswith(TEMP_SUFFIX):
            return False
        if any(path == folder or path.startswith(folder + os.sep) for folder in self._ignored):
            return False
        return bool(super().__call__(change, path))


def folder_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder, or None when it is missing or not a folder."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not os.path.isdir(path):
        return None
    return (info.st_dev, info.st_ino)


class FolderWatcher:
    """Runs ``on_change`` after file events in ``root`` and on a fixed rescan period."""

    def __init__(self, root: Path, *, on_change: OnChange, settings: WatchSettings) -> None:
        self.root = root
        self._on_change = on_change
        self._settings = settings
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.watching = False

    async def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="desired-watch"),
            asyncio.create_task(self._rescan_loop(), name="desired-rescan"),
        ]

    async def stop(self) -> None:
        # The watch thread checks this event between steps, so awatch returns promptly.
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.watching = False

    async def _notify(self, reason: str) -> None:
        try:
            await self._on_change(reason)
        except Exception:
            log.exception("reading the desired folder failed (%s)", reason)

    async def _rescan_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self._settings.rescan_seconds)
            await self._notify("periodic rescan")

    async def _watch_loop(self) -> None:
        missing_reported = False
        while not self._stop.is_set():
            identity = await asyncio.to_thread(folder_identity, self.root)
            if identity is None:
                self.watching = False
                if not missing_reported:
                    log.warning("desired folder %s is missing; waiting for it", self.root)
                    missing_reported = True
                    await self._notify("folder missing")
                await asyncio.sleep(self._settings.missing_poll_seconds)
                continue
            if missing_reported:
                log.info("desired folder %s is back", self.root)
                missing_reported = False
            try:
                await self._watch_once(identity)
            except (FileNotFoundError, PermissionError, OSError) as exc:
                self.watching = False
                log.warning("cannot watch %s: %s", self.root, exc)
                await asyncio.sleep(self._settings.missing_poll_seconds)

    async def _watch_once(self, identity: tuple[int, int]) -> None:
        """Watch until the folder disappears or is replaced (or the watcher stops)."""
        changes_stream = awatch(
            self.root,
            watch_filter=DesiredFilter(self.root),
            debounce=max(self._settings.debounce_ms * 4, 200),
            step=self._settings.debounce_ms,
            stop_event=self._stop,
            rust_timeout=self._settings.identity_check_ms,
            yield_on_timeout=True,
            force_polling=self._settings.force_polling or None,
            recursive=True,
        )
        self.watching = True
        # What changed between the last look and the start of this watch is caught here.
        await self._notify("watch started")
        async with contextlib.aclosing(changes_stream) as stream:
            async for changes in stream:
                if changes:
                    await self._notify(f"{len(changes)} {FILE_EVENTS}")
                if await asyncio.to_thread(folder_identity, self.root) != identity:
                    log.warning("desired folder %s was removed or replaced", self.root)
                    self.watching = False
                    return
