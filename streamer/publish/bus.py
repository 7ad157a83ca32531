"""In-process fan-out of pipeline messages to sinks.

Each subscriber owns a bounded queue. Publishing never blocks and never waits for a
sink: when a subscriber's queue is full the *oldest* message is dropped (and counted),
so a slow broker, LLM or browser cannot slow the video. Replay sinks that must see every
message (the JSONL writer) subscribe with ``lossless=True``; publishing then waits for
room, which is right for files and wrong for live sinks.

    bus = EventBus()
    sub = bus.subscribe("mqtt", maxsize=1000)
    async for msg in sub: ...          # ends after bus.close()
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable

from streamer.messages import Message

logger = logging.getLogger(__name__)

_CLOSED = object()


class Subscription:
    """A sink's view of the bus: an async iterator over messages it accepts."""

    def __init__(
        self,
        name: str,
        maxsize: int,
        lossless: bool,
        accept: Callable[[Message], bool] | None,
    ) -> None:
        if maxsize <= 0:
            raise ValueError(f"subscription {name!r}: maxsize must be > 0, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.lossless = lossless
        self.accept = accept
        self.dropped = 0
        self.delivered = 0
        self._items: collections.deque[object] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def _offer(self, msg: object) -> None:
        if self._closed:
            return
        if len(self._items) >= self.maxsize and msg is not _CLOSED:
            self._items.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100, 1000) or self.dropped % 10000 == 0:
                logger.warning("sink %s is slow: %d message(s) dropped", self.name, self.dropped)
        self._items.append(msg)
        self._ready.set()
        if len(self._items) >= self.maxsize:
            self._room.clear()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if len(self._items) < self.maxsize:
            self._room.set()
        if item is _CLOSED:
            self._closed = True
            self._items.clear()
            self._room.set()
            raise StopAsyncIteration
        self.delivered += 1
        return item  # type: ignore[return-value]

    def get_nowait(self) -> Message | None:
        """Next message or None when empty (for sinks that batch)."""
        if not self._items or self._items[0] is _CLOSED:
            return None
        item = self._items.popleft()
        if len(self._items) < self.maxsize:
            self._room.set()
        self.delivered += 1
        return item  # type: ignore[return-value]


class EventBus:
    """Fan-out of messages to any number of subscriptions."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self.published = 0
        self._closed = False

    def subscribe(
        self,
        name: str,
        maxsize: int = 1000,
        *,
        lossless: bool = False,
        accept: Callable[[Message], bool] | None = None,
    ) -> Subscription:
        """Add a sink. ``accept`` filters messages before they are queued."""
        sub = Subscription(name, maxsize, lossless, accept)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subs)

    def publish(self, msg: Message) -> None:
        """Queue ``msg`` for every interested subscriber; never blocks."""
        if self._closed:
            return
        self.published += 1
        for sub in self._subs:
            if sub.accept is None or sub.accept(msg):
                sub._offer(msg)

    async def publish_wait(self, msg: Message) -> None:
        """Like :meth:`publish`, but first waits for room in lossless subscriptions."""
        for sub in self._subs:
            if sub.lossless and not sub._closed:
                while len(sub) >= sub.maxsize and not sub._closed:
                    sub._room.clear()
                    await sub._room.wait()
        self.publish(msg)

    def close(self) -> None:
        """End every subscription's iteration after the messages already queued."""
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub._items.append(_CLOSED)
            sub._ready.set()
