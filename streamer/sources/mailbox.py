"""Hand-off of frames from a decode thread to the asyncio pipeline.

Live sources use a one-slot, latest-frame-wins mailbox: the decoder never waits, a newer
frame replaces an unread one, and the replaced frame is counted as skipped. Memory stays
at one frame whatever the speed of inference. Files decoded "as fast as possible" use the
same mailbox with ``lossless=True``: the decode thread waits until the slot is empty, so
no frame is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class MailboxClosed(Exception):
    """Raised by :meth:`Mailbox.get` once the mailbox is closed and empty."""


class Mailbox(Generic[T]):
    """A one-slot mailbox between one producer thread and one asyncio consumer.

    Args:
        loop: the event loop the consumer runs in.
        lossless: when True, :meth:`put` blocks until the consumer took the previous item
            instead of replacing it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, lossless: bool = False) -> None:
        self._loop = loop
        self.lossless = lossless
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self._ready = asyncio.Event()
        self.put_count = 0
        self.skipped = 0
        # Producers that pass a generation other than this one are refused (an abandoned
        # decode thread); set it under the producers' own lock before starting a new one.
        self.generation = 0

    def _wake(self) -> None:
        # RuntimeError: the loop is already closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, item: T, generation: int | None = None) -> bool:
        """Offer ``item`` (any thread). Lossy: replaces an unread item and counts it.

        Args:
            item: the item.
            generation: the producer's generation; refused unless it is :attr:`generation`.

        Returns:
            False when the mailbox is closed or the producer is stale (it should stop).
        """
        with self._cond:
            if self.lossless:
                while self._has_item and not self._closed and self._current(generation):
                    self._cond.wait(0.5)
            if self._closed or not self._current(generation):
                return False
            if self._has_item:
                self.skipped += 1
            self._item = item
            self._has_item = True
            self.put_count += 1
        self._wake()
        return True

    def _current(self, generation: int | None) -> bool:
        return generation is None or generation == self.generation

    def close(self) -> None:
        """No more items (any thread); a pending item is still delivered."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def take_nowait(self) -> T | None:
        """The pending item or None."""
        with self._cond:
            if not self._has_item:
                return None
            item = self._item
            self._item = None
            self._has_item = False
            self._cond.notify_all()
            return item

    async def get(self) -> T:
        """Wait for the next item (event-loop thread only).

        Raises:
            MailboxClosed: the mailbox is closed and nothing is pending.
        """
        while True:
            self._ready.clear()
            with self._cond:
                if self._has_item:
                    item = self._item
                    self._item = None
                    self._has_item = False
                    self._cond.notify_all()
                    return item  # type: ignore[return-value]
                if self._closed:
                    raise MailboxClosed
            await self._ready.wait()
