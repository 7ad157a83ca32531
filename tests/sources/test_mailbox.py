"""The frame mailbox: latest-frame-wins (counted) for live sources, lossless with read-ahead
(producer waits) for files."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamer.errors import MediaError
from streamer.sources.mailbox import Mailbox, MailboxClosed
from tests.helpers.wait import wait_until


async def test_latest_wins_and_skips_are_counted() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop())
    for i in range(5):
        assert box.put(i)
    assert box.skipped == 4
    assert await box.get() == 4
    assert box.take_nowait() is None


async def test_get_waits_for_a_put_from_another_thread() -> None:
    box: Mailbox[str] = Mailbox(asyncio.get_running_loop())
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not getter.done()
    threading.Thread(target=box.put, args=("frame",)).start()
    assert await asyncio.wait_for(getter, 10) == "frame"


async def test_close_delivers_pending_then_ends() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop())
    box.put(1)
    box.close()
    assert not box.put(2)  # producer learns it should stop
    assert await box.get() == 1
    with pytest.raises(MailboxClosed):
        await box.get()


async def test_close_wakes_a_waiting_consumer() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop())
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    threading.Thread(target=box.close).start()
    with pytest.raises(MailboxClosed):
        await asyncio.wait_for(getter, 10)


async def test_lossless_loses_nothing_with_a_slow_consumer() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop(), lossless=True)
    n = 200

    def produce() -> None:
        for i in range(n):
            box.put(i)
        box.close()

    producer = threading.Thread(target=produce)
    producer.start()
    got = []
    while True:
        try:
            got.append(await box.get())
        except MailboxClosed:
            break
        if len(got) % 50 == 0:
            await asyncio.sleep(0.01)
    producer.join(10)
    assert got == list(range(n))
    assert box.skipped == 0


async def test_lossless_put_waits_for_room_and_returns_when_closed() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop(), lossless=True)
    box.put(1)
    result: list[bool] = []
    blocked = threading.Thread(target=lambda: result.append(box.put(2)))
    blocked.start()
    # The producer is seen waiting inside put (not merely not yet started): a put that
    # did not wait for room would never be counted here and the wait would time out.
    await wait_until(lambda: box.waiting == 1, what="the producer waiting for room")
    assert result == [] and box.pending == 1
    box.close()
    await asyncio.to_thread(blocked.join, 10)
    assert result == [False]
    assert box.waiting == 0


async def test_lossless_read_ahead_holds_capacity_items_in_order() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop(), lossless=True, capacity=3)
    for i in range(3):
        assert box.put(i)  # room for three: none of these waits
    assert box.waiting == 0 and box.pending == 3
    extra = threading.Thread(target=box.put, args=(3,))
    extra.start()
    await wait_until(lambda: box.waiting == 1, what="the fourth put waiting")
    assert await box.get() == 0  # makes room: the fourth goes in
    await asyncio.to_thread(extra.join, 10)
    assert [await box.get() for _ in range(3)] == [1, 2, 3]
    assert box.skipped == 0


async def test_close_with_an_error_raises_it_after_the_pending_items() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop(), lossless=True, capacity=4)
    box.put(1)
    box.close(MediaError("clip.mp4: decoder failed"))
    assert await box.get() == 1
    with pytest.raises(MediaError, match="decoder failed"):
        await box.get()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(asyncio.new_event_loop(), capacity=0)
