"""The event bus: never blocks live publishers, drops oldest (counted), lossless waits."""

from __future__ import annotations

import asyncio
import time

from streamer.messages import CameraState, CameraStatus
from streamer.publish.bus import EventBus


def _status(i: int) -> CameraStatus:
    return CameraStatus("cam", CameraState.ONLINE, time.time(), detail=str(i))


async def test_slow_subscriber_drops_oldest_and_counts() -> None:
    bus = EventBus()
    sub = bus.subscribe("slow", maxsize=3)
    for i in range(10):
        bus.publish(_status(i))
    bus.close()
    got = [m.detail async for m in sub]  # type: ignore[union-attr]
    assert got == ["7", "8", "9"]
    assert sub.dropped == 7


async def test_filter_and_fan_out() -> None:
    bus = EventBus()
    all_ = bus.subscribe("all", maxsize=100)
    odd = bus.subscribe("odd", maxsize=100, accept=lambda m: int(m.detail) % 2 == 1)  # type: ignore[union-attr]
    for i in range(6):
        bus.publish(_status(i))
    bus.close()
    assert len([m async for m in all_]) == 6
    assert [m.detail async for m in odd] == ["1", "3", "5"]  # type: ignore[union-attr]


async def test_lossless_subscriber_gets_everything_when_publisher_waits() -> None:
    bus = EventBus()
    sub = bus.subscribe("file", maxsize=2, lossless=True)
    received: list[str] = []

    async def consume() -> None:
        async for m in sub:
            received.append(m.detail)  # type: ignore[union-attr]
            await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    for i in range(50):
        await bus.publish_wait(_status(i))
    bus.close()
    await asyncio.wait_for(task, 5)
    assert received == [str(i) for i in range(50)]
    assert sub.dropped == 0
