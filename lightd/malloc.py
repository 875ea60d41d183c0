"""glibc's allocator settings for a long-running daemon with many threads.

glibc gives each thread that allocates while another holds an arena a new arena of its
own, up to eight per core; lightd's threads (engine calls, one console reader per
running container, disk and file work) each leave their arena's freed memory mapped,
which is most of the RSS above the Python heap after a while. :func:`limit_arenas`
caps them (``mallopt(M_ARENA_MAX)``, what ``MALLOC_ARENA_MAX`` does) before any thread
starts. It must not do anything else, and is a no-op where glibc is absent or the
operator set ``MALLOC_ARENA_MAX`` themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # from glibc's malloc.h
DEFAULT_ARENAS = 2


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True when the cap was set here."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
