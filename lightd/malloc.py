"""Giving memory that lightd freed back to the system (glibc's ``malloc_trim``).

WebSocket churn (watchers that connect, read and leave every few seconds) frees most of
what each connection allocated, but glibc keeps freed pages of its heaps mapped, so
the resident size stays at the high-water mark of the churn. :func:`trim` asks glibc to
return the free pages (``malloc_trim(0)``); the daemon calls it from a thread every
:data:`TRIM_SECONDS`. It must not do anything else, and is a no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_SECONDS = 30.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return free heap pages to the system; True when glibc released some."""
    return bool(_TRIM(0)) if _TRIM is not None else False
