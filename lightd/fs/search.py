"""Search of one volume: entries whose name matches, optionally whose content contains bytes.

The walk goes through the volume with descriptors only (the same ``O_NOFOLLOW`` walk as
:mod:`lightd.fs.beneath`): a symlink is reported as itself when its name matches, but it
is never descended into nor read. Folders named in :data:`SKIPPED_FOLDERS` are not
entered unless the caller asks for them. The search stops at the first of: ``limit``
matches, an answer of :data:`ANSWER_MAX_BYTES`, :data:`ENTRIES_MAX` entries looked at;
folders deeper than ``max_depth`` are not entered. Content is matched on bytes, reading
at most ``content_max_bytes`` of each regular file.

:func:`name_matcher` and :func:`find_in` decide without the disk and are table-tested;
:func:`search` is blocking (callers run it in a thread). It must not know about HTTP.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from lightd.errors import InvalidField
from lightd.fs.beneath import DIR_FLAGS, READ_FLAGS, Root, closing_fd, lstat_at
from lightd.fs.ops import EntryType, entry_type, guarded
from lightd.fs.paths import TEMP_PREFIX, Parts, display

MIN_PATTERN = 3
MAX_PATTERN = 255
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_DEPTH = 8
MAX_DEPTH = 8
ANSWER_MAX_BYTES = 8 * 1024 * 1024
ENTRIES_MAX = 1_000_000
# Room one match takes in the JSON answer besides its path (keys, numbers, quotes).
MATCH_OVERHEAD = 96
READ_CHUNK = 256 * 1024
GLOB_CHARS = frozenset("*?[")
SKIPPED_FOLDERS = frozenset(
    {"node_modules", ".git", ".wine", "appcache", "depotcache", "vendor", "__pycache__"}
)


@dataclass(frozen=True)
class SearchQuery:
    pattern: str | None
    content: bytes | None = None
    max_depth: int = DEFAULT_DEPTH
    limit: int = DEFAULT_LIMIT
    include_skipped: bool = False
    content_max_bytes: int = 5 * 1024 * 1024


@dataclass(frozen=True)
class Match:
    path: str
    type: EntryType
    size: int
    modified_at: int
    line: int | None = None


@dataclass
class SearchResult:
    matches: list[Match] = field(default_factory=list)
    truncated: bool = False


def name_matcher(pattern: str | None) -> Callable[[str], bool]:
    """A test of names against ``pattern``: a glob when it has ``*?[``, else a substring.

    Both are case-insensitive. Patterns shorter than :data:`MIN_PATTERN` characters are
    refused (400 naming ``pattern``); None (a content search over every name) matches all.
    """
    if pattern is None:
        return lambda name: True
    if len(pattern) < MIN_PATTERN:
        raise InvalidField("pattern", f"must be at least {MIN_PATTERN} characters")
    if len(pattern) > MAX_PATTERN:
        raise InvalidField("pattern", f"must be at most {MAX_PATTERN} characters")
    if "/" in pattern or "\x00" in pattern:
        raise InvalidField("pattern", "must not contain '/' or NUL")
    folded = pattern.casefold()
    if GLOB_CHARS.isdisjoint(pattern):
        return lambda name: folded in name.casefold()
    compiled = re.compile(fnmatch.translate(folded), re.DOTALL)
    return lambda name: compiled.match(name.casefold()) is not None


def find_in(head: bytes, needle: bytes) -> int | None:
    """The 1-based line of the first ``needle`` in ``head``; None when absent."""
    at = head.find(needle)
    if at < 0:
        return None
    return head.count(b"\n", 0, at) + 1


def _content_line(dir_fd: int, name: str, needle: bytes, cap: int) -> int | None:
    """The line of ``needle`` within the first ``cap`` bytes of the regular file ``name``."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    with closing_fd(fd):
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            os.set_blocking(fd, True)
            lines = 0
            tail = b""
            remaining = cap
            while remaining > 0:
                chunk = os.read(fd, min(READ_CHUNK, remaining))
                if not chunk:
                    return None
                remaining -= len(chunk)
                window = tail + chunk
                found = find_in(window, needle)
                if found is not None:
                    return lines + found
                keep = len(needle) - 1
                cut = len(window) - keep if keep else len(window)
                lines += window.count(b"\n", 0, cut)
                tail = window[cut:]
        except OSError:
            return None
    return None


class _Walk:
    def __init__(self, query: SearchQuery) -> None:
        self.query = query
        self.matches_name = name_matcher(query.pattern)
        self.result = SearchResult()
        self.answer_bytes = 0
        self.seen = 0

    def full(self) -> bool:
        return self.result.truncated

    def add(self, match: Match) -> None:
        """Keep ``match``, or stop (``truncated``) when it is one too many for a cap."""
        cost = len(match.path.encode()) + MATCH_OVERHEAD
        if (
            len(self.result.matches) >= self.query.limit
            or self.answer_bytes + cost > ANSWER_MAX_BYTES
        ):
            self.result.truncated = True
            return
        self.answer_bytes += cost
        self.result.matches.append(match)

    def visit(self, dir_fd: int, parts: Parts, depth: int = 1) -> None:
        """Look at the entries of one folder (at ``depth`` below the start), then below."""
        try:
            with os.scandir(dir_fd) as found:
                names = sorted(item.name for item in found)
        except OSError:
            return
        folders: list[str] = []
        for name in names:
            if self.full():
                return
            if not parts and name.startswith(TEMP_PREFIX):
                continue
            self.seen += 1
            if self.seen > ENTRIES_MAX:
                self.result.truncated = True
                return
            info = lstat_at(dir_fd, name)
            if info is None:
                continue
            is_dir = stat.S_ISDIR(info.st_mode)
            if is_dir and (self.query.include_skipped or name not in SKIPPED_FOLDERS):
                folders.append(name)
            self.consider(dir_fd, (*parts, name), info)
        if depth >= self.query.max_depth:
            return
        for name in folders:
            if self.full():
                return
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue  # gone, or swapped for a link meanwhile: not followed
            with closing_fd(child):
                self.visit(child, (*parts, name), depth + 1)

    def consider(self, dir_fd: int, parts: Parts, info: os.stat_result) -> None:
        if not self.matches_name(parts[-1]):
            return
        kind = entry_type(info.st_mode)
        line: int | None = None
        if self.query.content is not None:
            if not stat.S_ISREG(info.st_mode):
                return
            cap = self.query.content_max_bytes
            line = _content_line(dir_fd, parts[-1], self.query.content, cap)
            if line is None:
                return
        self.add(
            Match(
                path=display(parts),
                type=kind,
                size=0 if kind == "directory" else info.st_size,
                modified_at=int(info.st_mtime),
                line=line,
            )
        )


def search(root: Root, parts: Parts, query: SearchQuery) -> SearchResult:
    """Matches below the folder at ``parts`` (the volume root when empty), in walk order.

    Depth counts from that folder: its own entries are at depth 1.
    """
    if query.pattern is None and query.content is None:
        raise InvalidField("pattern", "is required unless 'content' is given")
    if query.content is not None and not query.content:
        raise InvalidField("content", "must not be empty")
    walk = _Walk(query)
    with guarded(parts, writing=False), root.dir(parts) as fd:
        walk.visit(fd, parts)
    return walk.result
