"""Parsing of the paths callers type: a string becomes a tuple of names below a volume root.

Paths are relative to the volume root (a leading ``/`` means the root). ``.`` and empty
components are dropped and ``..`` is applied lexically; one that would climb above the
root is :class:`~lightd.errors.PathTraversal`. NUL bytes, names over 255 bytes and paths
over 4096 bytes are refused. Nothing here touches the disk: whether a name is a symlink
is decided by the descriptor walk in :mod:`lightd.fs.beneath`, which never follows one.

Where lightd creates a symlink (extraction, move, copy) it judges the link the way the
kernel will resolve it for a tool that does follow links: :func:`resolve_link` walks
the target through the links already there (asked of an injected ``lookup``), so
``link -> .`` followed by ``escape -> link/link/../../x`` is seen to climb out.
:func:`relative_target` then gives the checked result as the text to write. This
module must stay pure: the disk is only ever reached through ``lookup``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from lightd.errors import InvalidField, PathTraversal

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
# Every temporary name lightd creates inside a volume starts with this; such names are
# never listed as archive content and are swept at start.
TEMP_PREFIX = ".lightd-tmp-"

Parts = tuple[str, ...]


def _encoded_length(text: str, field: str) -> int:
    try:
        return len(text.encode("utf-8", "strict"))
    except UnicodeEncodeError as exc:
        raise InvalidField(field, "path is not valid UTF-8") from exc


def parse_path(raw: str, *, field: str = "path") -> Parts:
    """The components of ``raw`` below the volume root (empty tuple: the root itself)."""
    if "\x00" in raw:
        raise InvalidField(field, "path contains a NUL byte")
    if _encoded_length(raw, field) > MAX_PATH_BYTES:
        raise InvalidField(field, f"path is longer than {MAX_PATH_BYTES} bytes")
    parts: list[str] = []
    for name in raw.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise PathTraversal()
            parts.pop()
            continue
        if _encoded_length(name, field) > MAX_NAME_BYTES:
            raise InvalidField(field, f"a name is longer than {MAX_NAME_BYTES} bytes")
        if name.startswith(TEMP_PREFIX):
            raise InvalidField(field, f"names starting with {TEMP_PREFIX} are reserved")
        parts.append(name)
    return tuple(parts)


def shown(name: str) -> str:
    """``name`` as text an answer can carry: bytes that are not UTF-8 become U+FFFD.

    Names read from disk or from an archive may be any bytes (Python keeps the others as
    lone surrogates); JSON cannot carry those, so answers show them replaced, as Wings
    does. Names callers type are UTF-8 already and come out unchanged.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def display(parts: Parts) -> str:
    """The canonical form of a parsed path, as answered to callers (root is ``/``)."""
    return shown("/".join(parts)) if parts else "/"


def is_within(inner: Parts, outer: Parts) -> bool:
    """True when ``inner`` is ``outer`` or lies below it."""
    return inner[: len(outer)] == outer


# The kernel gives up after 40 links in one resolution (ELOOP); so does resolve_link.
MAX_LINK_HOPS = 40


@dataclass(frozen=True)
class Found:
    """What ``lookup`` saw at a path: a real folder, a symlink (with its text), or other.

    ``other`` is a regular file, a special file or nothing at all: a resolution cannot go
    on below it, so the rest of the target is taken as plain names.
    """

    kind: Literal["folder", "link", "other"]
    target: str = ""


FOLDER = Found("folder")
OTHER = Found("other")
Lookup = Callable[[Parts], Found]


def resolve_link(folder: Parts, target: str, lookup: Lookup) -> Parts | None:
    """Where a symlink in ``folder`` with text ``target`` leads, as the kernel follows it.

    ``folder`` must be a chain of real folders below the top (the one a link can't climb
    out of). Names are looked up one at a time while the walk is on real folders; a
    symlink met on the way (the last name included) is replaced by its own text,
    resolved from the folder it is in; ``..`` climbs the real parent. Below a name that
    is no folder (or does not exist yet) the rest applies as text, which is also what
    :func:`relative_target` will write. None: absolute, empty, NUL, climbs above the top,
    or more than :data:`MAX_LINK_HOPS` links (a loop).
    """
    if not target or target.startswith("/") or "\x00" in target:
        return None
    pending = target.split("/")
    pending.reverse()  # a stack: the next name is last
    parts = list(folder)
    real = len(parts)  # parts[:real] are folders seen on disk (or given as such)
    hops = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                return None
            parts.pop()
            real = min(real, len(parts))
            continue
        if len(parts) > real:
            parts.append(name)
            continue
        found = lookup((*parts, name))
        if found.kind == "link":
            hops += 1
            text = found.target
            if hops > MAX_LINK_HOPS or not text or text.startswith("/") or "\x00" in text:
                return None
            pending.extend(reversed(text.split("/")))
            continue
        parts.append(name)
        if found.kind == "folder":
            real += 1
    return tuple(parts)


def relative_target(folder: Parts, resolved: Parts) -> str:
    """The link text that leads from ``folder`` to ``resolved``: ``..`` only up front."""
    common = 0
    while common < min(len(folder), len(resolved)) and folder[common] == resolved[common]:
        common += 1
    pieces = [".."] * (len(folder) - common) + list(resolved[common:])
    return "/".join(pieces) if pieces else "."
