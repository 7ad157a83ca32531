"""Soak: many real RTSP outages in a row; frames always resume, memory and threads flat.

Deselected by default; run with ``pytest -m soak tests/sources``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource
from streamer.testing.sources import RtspServer
from tests.helpers.sources import wait_until

pytestmark = [pytest.mark.soak, pytest.mark.rtsp]

CYCLES = 20


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def more_frames(src: LiveSource, n: int) -> bool:
    return src.stats().frames > n


def more_stalls(src: LiveSource, n: int) -> bool:
    return src.stats().stalls > n


async def test_repeated_kills_and_stalls_memory_and_threads_flat(
    rtsp_server: Callable[..., RtspServer],
    long_clip: Path,
) -> None:
    srv = rtsp_server(long_clip)
    cfg = CameraConfig(
        name="soak",
        url=srv.url,
        stall_timeout_s=1.0,
        open_timeout_s=1.0,
        backoff={"initial_s": 0.1, "max_s": 0.5},
    )
    rss: list[float] = []
    threads: list[int] = []

    async def consume(src: LiveSource) -> None:
        async for _ in src:
            pass

    async with LiveSource(cfg) as src:
        consumer = asyncio.create_task(consume(src))
        for cycle in range(CYCLES):
            n = src.stats().frames
            await wait_until(partial(more_frames, src, n + 10), 30, f"frames, cycle {cycle}")
            if cycle % 2:
                srv.kill()
                srv.start()
            else:
                srv.pause()
                await wait_until(partial(more_stalls, src, cycle // 2), 30, "a stall")
                srv.resume()
            rss.append(rss_mb())
            threads.append(threading.active_count())
    await consumer
    assert src.stats().errors >= CYCLES and src.stats().reconnects >= CYCLES - 1
    assert max(threads[5:]) <= threads[4]  # no thread accumulates
    assert rss[-1] - rss[4] < 30.0  # MiB; a leak per reconnect would show here
