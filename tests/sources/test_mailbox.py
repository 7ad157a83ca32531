"""One-slot mailbox: latest-frame-wins (counted) or lossless (producer waits)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamer.sources.mailbox import Mailbox, MailboxClosed


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


async def test_lossless_put_returns_when_closed() -> None:
    box: Mailbox[int] = Mailbox(asyncio.get_running_loop(), lossless=True)
    box.put(1)
    result: list[bool] = []
    blocked = threading.Thread(target=lambda: result.append(box.put(2)))
    blocked.start()
    await asyncio.sleep(0.05)
    assert blocked.is_alive()  # waits for room
    box.close()
    await asyncio.to_thread(blocked.join, 10)
    assert result == [False]
