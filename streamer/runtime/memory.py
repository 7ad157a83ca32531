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
glibc's ``malloc_trim(0)`` every :data:`TRIM_INTERVAL_S` (:func:`tidy_memory_every`),
which returns the free whole pages inside every arena's heaps (``madvise``) too. It
costs well under a millisecond with little to return (12 ms to return about 150 MB,
measured); ``STREAMER_MALLOC_TUNING=0`` turns it off too.

Python's own objects need the same care. A dead MQTT session (the client, its socket
transport, tasks, the exception that ended it with its traceback's frames) is a web of
reference cycles that only the cyclic garbage collector frees (some 600 objects a minute
with a broker restart or network cut every minute); and CPython runs a *full*
collection only when the objects that survived since the last one reach a quarter of
all long-lived objects, ~150,000 in a running analyzer (the libraries, the models'
sessions), so that garbage piles up for a long time in pymalloc's arenas, which
fragment. So the same periodic task runs a full collection before each trim
(:func:`tidy_memory_every`), after moving the objects of the start-up into the
collector's permanent generation (:func:`gc.freeze`, once, at the first tick): a
collection then looks only at what was made since, about a millisecond (0.7 to 1.3 ms
median, measured) instead of 50 to 90 ms of a blocked event loop. Once an hour
(:data:`UNFREEZE_EVERY` ticks) everything is unfrozen, collected and frozen again, so
cyclic garbage among start-up objects (the first MQTT session's) is freed too; when the
run ends everything is unfrozen. ``STREAMER_GC_TIDY=0`` leaves the
collector to CPython's own schedule.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024  # bytes; a decoded 640x480 frame is 900 KB
_M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
TRIM_INTERVAL_S = 60.0
UNFREEZE_EVERY = 60  # ticks of TRIM_INTERVAL_S between full passes over everything
ENV_SWITCH = "STREAMER_MALLOC_TUNING"
GC_SWITCH = "STREAMER_GC_TIDY"
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


def collect_garbage(*, refreeze: bool) -> tuple[int, float]:
    """A full cyclic collection of what is not frozen; with ``refreeze``, of everything
    (unfrozen first), after which all that survives is frozen. Returns the objects
    freed and the milliseconds it took."""
    t0 = time.perf_counter()
    if refreeze:
        gc.unfreeze()
    freed = gc.collect()
    if refreeze:
        gc.freeze()
    return freed, (time.perf_counter() - t0) * 1000.0


_tidiers = 0  # tidy tasks running in this process (a freeze is the process's, not a run's)


async def tidy_memory_every(interval_s: float = TRIM_INTERVAL_S) -> None:
    """Every ``interval_s`` until cancelled: a cyclic garbage collection, then glibc's
    trim (where there is one). The first tick, and every :data:`UNFREEZE_EVERY`-th,
    collects everything and freezes what survives. Ended, the last of the process's
    tidy tasks unfreezes, and only when one of them froze: a freeze of the host's (a run
    shorter than a tick) or of a run still going is left alone."""
    global _tidiers
    trim = malloc_trimmer()
    tidy_gc = os.environ.get(GC_SWITCH, "1") != "0"
    if trim is None and not tidy_gc:
        return
    tick = 0
    froze = False
    _tidiers += 1
    try:
        while True:
            await asyncio.sleep(interval_s)
            if tidy_gc:
                refreeze = tick % UNFREEZE_EVERY == 0
                freed, ms = collect_garbage(refreeze=refreeze)
                froze = froze or refreeze
                logger.debug("memory: %d objects of cyclic garbage freed in %.1f ms", freed, ms)
            tick += 1
            if trim is not None:
                trim()
    finally:
        _tidiers -= 1
        if froze and _tidiers == 0:
            gc.unfreeze()


__all__ = ["collect_garbage", "malloc_trimmer", "tidy_memory_every", "tune_malloc"]
