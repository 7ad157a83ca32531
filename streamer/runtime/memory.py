"""glibc ``malloc`` settings for an analyzer that runs for months (Linux/glibc only).

Two glibc defaults make the resident memory of a long live run creep up although nothing
is leaked: every thread that allocates gets its own malloc *arena* (up to 8 per core),
and decode threads come and go with every camera reconnect; and the threshold above
which a block is mapped on its own (and handed back to the system when freed) grows on
its own up to 32 MB once such a block is freed, after which every decoded frame
(~1 MB) comes from the arenas' heaps, which fragment and seldom shrink. The live
runtime fixes both at start-up: at most :data:`ARENA_MAX` arenas and a fixed
:data:`MMAP_THRESHOLD` (frames are mapped and unmapped whole). A ``MALLOC_ARENA_MAX``
or ``MALLOC_MMAP_THRESHOLD_`` in the environment wins (glibc reads them itself), and
``STREAMER_MALLOC_TUNING=0`` turns the tuning off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024  # bytes; a decoded 640x480 frame is 900 KB
_M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
ENV_SWITCH = "STREAMER_MALLOC_TUNING"
_GLIBC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")


def tune_malloc() -> dict[str, int]:
    """Apply the settings once, as early as possible; returns what was set (empty:
    nothing: not glibc, turned off, or the environment sets them)."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or any(k in os.environ for k in _GLIBC_ENV):
        return {}
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
            return {}
    except OSError:
        return {}
    done: dict[str, int] = {}
    for param, value, key in (
        (_M_ARENA_MAX, ARENA_MAX, "arena_max"),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD, "mmap_threshold"),
    ):
        if mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            done[key] = value
    logger.debug("malloc tuning: %s", done)
    return done


__all__ = ["tune_malloc"]
