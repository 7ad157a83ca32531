"""The live runtime's glibc malloc settings (``streamer.runtime.memory``).

Checked in a fresh interpreter each: whether a freed large block raised glibc's mmap
threshold decides whether the next frame-sized block is mapped on its own (handed back
to the system when freed) or carved out of a heap that fragments.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import weakref

import pytest

from tests.helpers.wait import wait_until_async

PROBE = """
import ctypes, json, sys
from streamer.runtime.memory import tune_malloc
done = tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
big = libc.malloc(8 << 20)  # freed: glibc's own rule raises its threshold to 8 MB
libc.free(big)
frame = libc.malloc(900 * 1024)  # a decoded 640x480 frame
size_field = ctypes.c_size_t.from_address(frame - ctypes.sizeof(ctypes.c_size_t)).value
print(json.dumps({"done": done, "mmapped": bool(size_field & 2)}))
"""


def _probe(**env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, **env},
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def test_frame_sized_blocks_stay_mapped_after_tuning() -> None:
    tuned = _probe()
    assert tuned["done"] == {"arena_max": 2, "mmap_threshold": 256 * 1024}
    assert tuned["mmapped"] is True
    # Without the tuning glibc's dynamic threshold puts the frame in a heap.
    assert _probe(STREAMER_MALLOC_TUNING="0") == {"done": {}, "mmapped": False}


def test_glibc_environment_settings_win() -> None:
    assert _probe(MALLOC_ARENA_MAX="4")["done"] == {}


TRIM_PROBE = """
import ctypes, json
from streamer.runtime.memory import malloc_trimmer

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(4000) for _ in range(40_000)]  # 160 MB of small blocks in the heap
for b in blocks:
    ctypes.memset(b, 1, 4000)
for b in blocks[:-1]:  # all freed but the top one: the heap cannot shrink at its top
    libc.free(b)
before = rss_mb()
trim = malloc_trimmer()
returned = trim() if trim is not None else None
print(json.dumps({"trim": trim is not None, "returned": returned, "freed_mb": before - rss_mb()}))
"""


def _trim_probe(**env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, **env},
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_a_trim_hands_back_free_pages_held_below_a_block_in_use() -> None:
    # What reconnects and restarts leave behind: freed memory under a block still in use,
    # resident until the live runtime's periodic trim returns it.
    trimmed = _trim_probe()
    assert trimmed["trim"] is True and trimmed["returned"] is True
    assert isinstance(trimmed["freed_mb"], float) and trimmed["freed_mb"] > 100
    assert _trim_probe(STREAMER_MALLOC_TUNING="0")["trim"] is False


async def test_the_periodic_trim_runs_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.runtime import memory

    calls: list[int] = []

    def trim() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(memory, "malloc_trimmer", lambda: trim)
    task = asyncio.create_task(memory.tidy_memory_every(0.01))

    async def three() -> bool:
        return len(calls) >= 3

    await wait_until_async(three, 30, "three trims")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


async def test_the_periodic_tidy_frees_cyclic_garbage_and_unfreezes_when_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Garbage in reference cycles (a dead MQTT session's) is freed every tick, not when
    CPython's thresholds get round to it (here: never, automatic collection is off), and
    by the ticks between the freezes too; start-up objects are frozen while the run
    lasts and unfrozen after it."""
    from streamer.runtime import memory

    monkeypatch.delenv(memory.GC_SWITCH, raising=False)
    monkeypatch.setattr(memory, "UNFREEZE_EVERY", 10**9)  # one freeze: the first tick's

    def garbage() -> weakref.ref[_Node]:
        return weakref.ref(_Node())

    gc.disable()
    try:
        before_first_tick = garbage()
        task = asyncio.create_task(memory.tidy_memory_every(0.01))

        async def frozen() -> bool:
            return gc.get_freeze_count() > 0

        await wait_until_async(frozen, 30, "the start-up frozen")
        assert before_first_tick() is None  # collected before the freeze, not frozen
        frozen_count = gc.get_freeze_count()
        made_later = garbage()

        async def freed() -> bool:
            return made_later() is None

        await wait_until_async(freed, 30, "the cycle made after the freeze freed")
        # Freed by a tick that froze nothing more (frozen objects may still die).
        assert gc.get_freeze_count() <= frozen_count
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        gc.enable()


async def test_gc_tidy_off_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.runtime import memory

    monkeypatch.setenv("STREAMER_GC_TIDY", "0")
    trims: list[int] = []

    def trim() -> bool:  # one call a tick: the ticks go on, the collector is left alone
        trims.append(1)
        return True

    monkeypatch.setattr(memory, "malloc_trimmer", lambda: trim)
    gc.disable()
    try:
        made = weakref.ref(_Node())
        task = asyncio.create_task(memory.tidy_memory_every(0.01))

        async def three_ticks() -> bool:
            return len(trims) >= 3

        await wait_until_async(three_ticks, 30, "three ticks")
        assert made() is not None and gc.get_freeze_count() == 0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        gc.enable()
        gc.collect()


async def test_a_tidy_ended_before_it_froze_leaves_a_freeze_of_others_alone() -> None:
    """A run shorter than a tick never froze anything, so it unfreezes nothing (the host
    process's freeze, or a run still going, keeps its own)."""
    from streamer.runtime import memory

    gc.freeze()
    try:
        held = gc.get_freeze_count()
        task = asyncio.create_task(memory.tidy_memory_every(3600))
        await asyncio.sleep(0)  # the task runs to its first wait (a tick away), no further
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert gc.get_freeze_count() > held // 2 > 0  # still frozen (a few died)
    finally:
        gc.unfreeze()
