"""Parsing of the paths callers type: a string becomes a tuple of names below a volume root.

Paths are relative to the volume root (a leading ``/`` means the root). ``.`` and empty
components are dropped and ``..`` is applied lexically; one that would climb above the
root is :class:`~lightd.errors.PathTraversal`. NUL bytes, names over 255 bytes and paths
over 4096 bytes are refused. Nothing here touches the disk: whether a name is a symlink
is decided by the descriptor walk in :mod:`lightd.fs.beneath`, which never follows one.
This module must stay pure.
"""

from __future__ import annotations

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


def display(parts: Parts) -> str:
    """The canonical form of a parsed path, as answered to callers (root is ``/``)."""
    return "/".join(parts) if parts else "/"


def is_within(inner: Parts, outer: Parts) -> bool:
    """True when ``inner`` is ``outer`` or lies below it."""
    return inner[: len(outer)] == outer


def resolve_link_target(entry: Parts, target: str) -> Parts | None:
    """Where a relative symlink at ``entry`` points, lexically; None if outside or absolute."""
    if not target or target.startswith("/") or "\x00" in target:
        return None
    parts = list(entry[:-1])
    for name in target.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(name)
    return tuple(parts)
