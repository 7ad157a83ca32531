"""The event bus: lossy subscribers drop the oldest sample, else the oldest message
(counted); lossless ones never lose a message whichever publish call is used, except
past a bounded live wait, counted."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from streamer.bus import LOSSLESS_OVERFLOW_FACTOR, EventBus, Subscription
from streamer.errors import BusFullError
from streamer.messages import (
    CameraState,
    CameraStatus,
    Message,
    TrackEvent,
    TrackEventKind,
    VASample,
)


def _status(i: int) -> CameraStatus:
    return CameraStatus("cam", CameraState.ONLINE, time.time(), detail=str(i))


def _detail(m: Message) -> str:
    assert isinstance(m, CameraStatus)
    return m.detail


async def _drain(sub: Subscription) -> list[str]:
    return [_detail(m) async for m in sub]


async def test_slow_lossy_subscriber_drops_oldest_and_counts() -> None:
    bus = EventBus()
    sub = bus.subscribe("slow", maxsize=3)
    for i in range(10):
        bus.publish_nowait(_status(i))
    for i in range(10, 12):
        await bus.publish(_status(i))  # lossy: the awaiting call never waits either
    bus.close()
    assert await _drain(sub) == ["9", "10", "11"]
    assert sub.dropped == 9


def _sample(track: int, frame: int) -> VASample:
    return VASample(
        "cam", frame, frame / 15, track, (0, 0, 10, 10), 0.1, 0.2, 0.1, 0.2, (0.01, 0.01), "m"
    )


async def test_a_burst_of_samples_never_pushes_out_a_track_event() -> None:
    # A slow MQTT publisher's face count and Home Assistant sensors follow the `lost`
    # events: dropping one of those for a sample left a face counted for ever.
    bus = EventBus()
    sub = bus.subscribe("slow", maxsize=4)
    bus.publish_nowait(TrackEvent("cam", 1, TrackEventKind.LOST, 9, 0.6))
    for frame in range(10, 20):
        bus.publish_nowait(_sample(2, frame))
    bus.publish_nowait(TrackEvent("cam", 3, TrackEventKind.APPEARED, 20, 1.3))
    bus.close()
    got = [m async for m in sub]
    assert [type(m).__name__ for m in got] == ["TrackEvent", "VASample", "VASample", "TrackEvent"]
    assert [m.frame for m in got if isinstance(m, VASample)] == [18, 19]  # the newest kept
    assert sub.dropped == 8


async def test_filter_and_fan_out() -> None:
    bus = EventBus()
    all_ = bus.subscribe("all", maxsize=100)
    odd = bus.subscribe("odd", maxsize=100, accept=lambda m: int(_detail(m)) % 2 == 1)
    for i in range(6):
        bus.publish_nowait(_status(i))
    bus.close()
    assert len(await _drain(all_)) == 6
    assert await _drain(odd) == ["1", "3", "5"]


@pytest.mark.parametrize("call", ["publish", "publish_nowait", "mixed"])
async def test_lossless_subscriber_gets_everything_whichever_call(call: str) -> None:
    bus = EventBus()
    sub = bus.subscribe("file", maxsize=2, lossless=True)
    lossy = bus.subscribe("lossy", maxsize=2)
    received: list[str] = []

    async def consume() -> None:
        async for m in sub:
            received.append(_detail(m))
            await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    n = 2 * LOSSLESS_OVERFLOW_FACTOR  # publish_nowait stays within the hard cap
    for i in range(n):
        if call == "publish" or (call == "mixed" and i % 2):
            await bus.publish(_status(i))
        else:
            bus.publish_nowait(_status(i))
    bus.close()
    await asyncio.wait_for(task, 5)
    assert received == [str(i) for i in range(n)]
    assert sub.dropped == 0
    assert lossy.dropped > 0  # the same traffic overflowed the lossy queue


async def test_lossless_replay_waits_as_long_as_the_sink_needs() -> None:
    bus = EventBus()  # replay: no wait limit
    sub = bus.subscribe("file", maxsize=1, lossless=True)
    await bus.publish(_status(0))
    blocked = asyncio.create_task(bus.publish(_status(1)))
    for _ in range(100):  # let the loop run freely: only a consumer can unblock it
        await asyncio.sleep(0)
    assert not blocked.done()  # waits for the sink instead of dropping
    assert await anext(sub) is not None
    await asyncio.wait_for(blocked, 2)
    bus.close()
    assert await _drain(sub) == ["1"]
    assert sub.dropped == 0


async def test_lossless_live_wait_is_bounded_then_counted_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus(lossless_wait_s=0.05)
    stuck = bus.subscribe("jsonl", maxsize=1, lossless=True)
    other = bus.subscribe("mqtt", maxsize=100)
    with caplog.at_level(logging.WARNING, logger="streamer.bus"):
        t0 = time.monotonic()
        for i in range(3):
            await bus.publish(_status(i))
        waited = time.monotonic() - t0
    assert waited < 2.0  # bounded: two waits of 0.05 s, not forever
    assert stuck.dropped == 2
    assert len(other) == 3  # the other sink got everything
    warnings = [r for r in caplog.records if "jsonl" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited, never silent
    assert "dropped" in warnings[0].getMessage()


async def test_publish_nowait_past_the_hard_cap_raises_and_loses_nothing() -> None:
    bus = EventBus()
    sub = bus.subscribe("file", maxsize=2, lossless=True)
    other = bus.subscribe("other", maxsize=1000)
    cap = 2 * LOSSLESS_OVERFLOW_FACTOR
    for i in range(cap):
        bus.publish_nowait(_status(i))
    with pytest.raises(BusFullError, match="file"):
        bus.publish_nowait(_status(cap))
    bus.close()
    assert await _drain(sub) == [str(i) for i in range(cap)]  # the oldest are kept
    assert sub.dropped == 0  # the caller was told; nothing vanished silently
    assert len(await _drain(other)) == cap  # queued for no one, not for some


async def test_nothing_is_queued_after_close() -> None:
    bus = EventBus()
    sub = bus.subscribe("s", maxsize=4)
    bus.publish_nowait(_status(0))
    bus.close()
    bus.publish_nowait(_status(1))
    await bus.publish(_status(2))
    assert await _drain(sub) == ["0"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        EventBus().subscribe("x", maxsize=0)
    with pytest.raises(ValueError, match="lossless_wait_s"):
        EventBus(lossless_wait_s=-1)
