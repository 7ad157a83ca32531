"""How much memory CPython's small-object allocator (pymalloc) holds, and how much of it
is in use.

Python objects of up to 512 bytes live in pymalloc's 1 MiB *arenas*; an arena goes back
to the system only when every object in it is freed, so a few long-lived objects made
during a burst (a reconnect, a traceback, a log record) can keep mostly empty arenas
resident. ``tracemalloc`` counts the objects, not the arenas: a run whose traced total
is flat can still grow in arenas. :func:`pymalloc_stats` reads CPython's own report
(``sys._debugmallocstats``, written to a temporary file through the C API so the
process's stderr is left alone; about 0.1 ms).
"""

from __future__ import annotations

import ctypes
import re
import sys
import tempfile

_FIELDS = {
    "# arenas allocated current": "arenas",
    "# arenas highwater mark": "arenas_highwater",
    "# bytes in allocated blocks": "used_bytes",
    "# bytes in available blocks": "free_bytes",
}
ARENA_BYTES = 1 << 20  # CPython 3.10+ on 64-bit Linux (read from the report when there)


def _report() -> str:
    """CPython's allocator report, or "" where it cannot be had."""
    try:
        stats = ctypes.pythonapi._PyObject_DebugMallocStats
        libc = ctypes.CDLL(None)
    except (AttributeError, OSError):
        return ""
    stats.argtypes = [ctypes.c_void_p]
    stats.restype = ctypes.c_int
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile("r", encoding="ascii", errors="replace") as tmp:
        fp = libc.fopen(tmp.name.encode(), b"w")
        if not fp:
            return ""
        try:
            written = stats(fp)
        finally:
            libc.fclose(fp)
        return tmp.read() if written else ""


def pymalloc_stats() -> dict[str, int] | None:
    """pymalloc's arenas now, their high-water mark and the bytes in used and free
    blocks, plus ``arena_size`` and ``arena_bytes`` (arenas times their size); None
    where pymalloc is not the allocator (``PYTHONMALLOC=malloc``, another interpreter)."""
    if sys.implementation.name != "cpython":
        return None
    out: dict[str, int] = {}
    arena_size = ARENA_BYTES
    for line in _report().splitlines():
        label, _, value = line.partition("=")
        key = _FIELDS.get(label.strip())
        if key is not None:
            out[key] = int(value.strip().replace(",", ""))
        m = re.match(r"\s*\d+ arenas \* (\d+) bytes/arena", line)
        if m:
            arena_size = int(m.group(1))
    if "arenas" not in out:
        return None
    out["arena_size"] = arena_size
    out["arena_bytes"] = out["arenas"] * arena_size
    return out


__all__ = ["pymalloc_stats"]
