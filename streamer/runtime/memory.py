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

Freed memory inside a heap is handed back to the system only when it sits at the top of
the heap; what is freed between blocks still in use stays resident. A run with faults
(reconnects, broker restarts) frees a lot of that, so the live runtime also calls
glibc's ``malloc_trim(0)`` every :data:`TRIM_INTERVAL_S` (:func:`trim_memory_every`),
which returns the free whole pages inside every arena's heaps (``madvise``) too. It
costs well under a millisecond with little to return (12 ms to return about 150 MB,
measured); ``STREAMER_MALLOC_TUNING=0`` turns it off too.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024  # bytes; a decoded 640x480 frame is 900 KB
_M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
TRIM_INTERVAL_S = 60.0
ENV_SWITCH = "STREAMER_MALLOC_TUNING"
_GLIBC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")


def _glibc() -> ctypes.CDLL | None:
    """glibc, unless the tuning is turned off or the C library is another."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "gnu_get_libc_version"):
        return None
    return libc


def tune_malloc() -> dict[str, int]:
    """Apply the settings once, as early as possible; returns what was set (empty:
    nothing: not glibc, turned off, or the environment sets them)."""
    if any(k in os.environ for k in _GLIBC_ENV):
        return {}
    libc = _glibc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
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


def malloc_trimmer() -> Callable[[], bool] | None:
    """glibc's ``malloc_trim(0)`` as a call that says whether memory went back to the
    system; None where there is none (or the tuning is off)."""
    trim = getattr(_glibc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


async def trim_memory_every(interval_s: float = TRIM_INTERVAL_S) -> None:
    """Trim the heaps every ``interval_s`` until cancelled (a no-op without glibc)."""
    trim = malloc_trimmer()
    if trim is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        trim()


__all__ = ["malloc_trimmer", "trim_memory_every", "tune_malloc"]
