"""The one hand-off of frames from a decode thread to the asyncio pipeline.

Live sources and recorded files use the same :class:`Mailbox`; they differ only in its
two settings:

* **live** (``lossless=False, capacity=1``): latest-frame-wins. The decoder never waits;
  a newer frame replaces an unread one, and the replaced frame is counted as skipped.
  Memory stays at one frame whatever the speed of inference.
* **files** (``lossless=True, capacity=N``): the decode thread runs ahead of the
  analysis by at most ``N`` frames, then waits until the consumer takes one. No frame
  is ever lost.

The producer ends the stream with :meth:`Mailbox.close`, optionally with the error the
consumer should see once the pending items are delivered::

    box: Mailbox[Frame] = Mailbox(loop, lossless=True, capacity=8)
    # decode thread:        box.put(frame) ... box.close()  (or box.close(err))
    # event loop:           frame = await box.get()  # MailboxClosed (or err) at the end
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from typing import Generic, TypeVar

from streamer.errors import MailboxClosed

T = TypeVar("T")

__all__ = ["Mailbox", "MailboxClosed"]

PRODUCER_WAKE_S = 0.5  # a waiting producer re-checks at least this often (s)


class Mailbox(Generic[T]):
    """A bounded mailbox between one producer thread and one asyncio consumer.

    Args:
        loop: the event loop the consumer runs in.
        lossless: when True, :meth:`put` waits for room instead of dropping.
        capacity: items held at most (1: a one-slot mailbox).

    Attributes:
        put_count: items accepted by :meth:`put`.
        skipped: items a lossy mailbox dropped (the oldest unread) to make room.
        waiting: producers waiting in :meth:`put` for room now (lossless only).
        generation: producers that pass another generation to :meth:`put` are refused
            (an abandoned decode thread); set it under the producers' own lock before
            starting a new one.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, lossless: bool = False, capacity: int = 1
    ) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be >= 1, got {capacity}")
        self._loop = loop
        self.lossless = lossless
        self.capacity = capacity
        self._cond = threading.Condition()
        self._items: collections.deque[T] = collections.deque()
        self._closed = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()
        self.put_count = 0
        self.skipped = 0
        self.waiting = 0
        self.generation = 0

    def _wake(self) -> None:
        # RuntimeError: the loop is already closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, item: T, generation: int | None = None) -> bool:
        """Offer ``item`` (any thread). Lossy: drops the oldest unread item when full.

        Args:
            item: the item.
            generation: the producer's generation; refused unless it is :attr:`generation`.

        Returns:
            False when the mailbox is closed or the producer is stale (it should stop).
        """
        with self._cond:
            if self.lossless:
                self.waiting += 1
                try:
                    while (
                        len(self._items) >= self.capacity
                        and not self._closed
                        and self._current(generation)
                    ):
                        self._cond.wait(PRODUCER_WAKE_S)
                finally:
                    self.waiting -= 1
            if self._closed or not self._current(generation):
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.skipped += 1
            self._items.append(item)
            self.put_count += 1
        self._wake()
        return True

    def _current(self, generation: int | None) -> bool:
        return generation is None or generation == self.generation

    def close(self, error: BaseException | None = None) -> None:
        """No more items (any thread); pending items are still delivered, then
        :meth:`get` raises ``error`` (or :class:`MailboxClosed`). A waiting producer
        returns False."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._error = error
            self._cond.notify_all()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Items put and not yet taken."""
        return len(self._items)

    def _take(self) -> T | None:
        """The oldest item, or None (the caller holds the lock)."""
        if not self._items:
            return None
        item = self._items.popleft()
        self._cond.notify_all()
        return item

    def take_nowait(self) -> T | None:
        """The oldest pending item or None."""
        with self._cond:
            return self._take()

    async def get(self) -> T:
        """Wait for the next item (event-loop thread only).

        Raises:
            MailboxClosed: the mailbox is closed and nothing is pending.
            BaseException: the error the producer closed it with, after the pending items.
        """
        while True:
            self._ready.clear()
            with self._cond:
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify_all()
                    return item
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    raise MailboxClosed
            await self._ready.wait()
