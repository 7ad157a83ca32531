"""The event bus: in-process fan-out of pipeline messages to stages and sinks.

Every stage after the tracks (describer, episodes, summary) and every sink (JSONL, MQTT,
web, metrics) talks only to the bus. Each subscriber owns a queue; the two kinds differ
only in what happens when a subscriber falls behind::

    lossy (default)    the *oldest* queued message is dropped and counted; a slow
                       broker, LLM or browser can never slow the video.
    lossless=True      never dropped by a full queue. ``await bus.publish_nowait(msg)`` waits for
                       room; ``bus.publish_nowait(msg)`` (for callers that cannot wait)
                       queues past ``maxsize`` up to a hard cap of ``maxsize *
                       LOSSLESS_OVERFLOW_FACTOR`` so memory stays bounded.

How long ``publish`` waits is the bus's ``lossless_wait_s``:

* ``None`` (replay): wait as long as it takes. Nothing is ever lost; a slow sink slows
  the replay instead.
* a number of seconds (live runs): wait at most that long for the slowest lossless
  sink, then drop the message *for that sink only*, count it in ``Subscription.dropped``
  and log a warning (rate-limited). A live camera cannot wait for a full disk forever,
  but a loss is never silent.

The same rule holds past the hard cap of ``publish_nowait``: counted, with a warning.

    bus = EventBus()                                  # replay: lossless waits forever
    sub = bus.subscribe("jsonl", maxsize=4096, lossless=True)
    await bus.publish_nowait(sample)
    async for msg in sub: ...                         # ends after bus.close()
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable

from streamer.messages import Message
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

LOSSLESS_OVERFLOW_FACTOR = 4  # hard cap of a lossless queue fed by publish_nowait, x maxsize
DROP_WARNING_INTERVAL_S = 10.0  # at most one "sink is slow" warning per sink per interval


class _Closed:
    """The end marker queued behind the last message of a closed subscription."""


_CLOSED = _Closed()


class Subscription:
    """A sink's view of the bus: an async iterator over the messages it accepts.

    Attributes:
        name: the sink's name (logs and metrics).
        maxsize: queue length at which a lossy queue drops its oldest message and a
            lossless one makes ``publish`` wait.
        lossless: see the module docstring.
        dropped: messages this subscriber never received.
        delivered: messages handed to the subscriber.
    """

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
        self._items: collections.deque[Message | _Closed] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._warn = LogThrottle(DROP_WARNING_INTERVAL_S)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def wants(self, msg: Message) -> bool:
        return not self._closed and (self.accept is None or self.accept(msg))

    def close(self) -> None:
        """The sink stops for good (it failed): drop what is queued, never wait on it."""
        self._closed = True
        self._items.clear()
        self._room.set()

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self._warn.ready():
            logger.warning("sink %s %s: %d message(s) dropped so far", self.name, why, self.dropped)

    def _offer(self, msg: Message) -> None:
        """Queue ``msg`` without waiting (see the module docstring for the policy)."""
        if self._closed:
            return
        if self.full:
            if not self.lossless:
                self._items.popleft()
                self._drop("is slow")
            elif len(self._items) >= self.maxsize * LOSSLESS_OVERFLOW_FACTOR:
                self._drop("is too slow for a lossless sink (hard cap reached)")
                return
        self._items.append(msg)
        self._ready.set()
        if self.full:
            self._room.clear()

    async def _wait_room(self, deadline: float | None) -> bool:
        """Wait until the queue has room; False when ``deadline`` (monotonic) passed."""
        while self.full and not self._closed:
            self._room.clear()
            if deadline is None:
                await self._room.wait()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                async with asyncio.timeout(left):  # not wait_for: it can lose a cancel
                    await self._room.wait()
            except TimeoutError:
                return False
        return True

    def _took(self) -> None:
        if len(self._items) < self.maxsize:
            self._room.set()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        self._took()
        if isinstance(item, _Closed):
            self._closed = True
            self._items.clear()
            self._room.set()
            raise StopAsyncIteration
        self.delivered += 1
        return item

    def get_nowait(self) -> Message | None:
        """Next message or None when empty (for sinks that batch)."""
        if not self._items or isinstance(item := self._items[0], _Closed):
            return None
        self._items.popleft()
        self._took()
        self.delivered += 1
        return item


class EventBus:
    """Fan-out of messages to any number of subscriptions.

    Args:
        lossless_wait_s: how long ``publish`` waits for room in a full lossless
            subscription; None waits forever (replay). See the module docstring.
    """

    def __init__(self, *, lossless_wait_s: float | None = None) -> None:
        if lossless_wait_s is not None and lossless_wait_s < 0:
            raise ValueError(f"lossless_wait_s must be >= 0 or None, got {lossless_wait_s}")
        self.lossless_wait_s = lossless_wait_s
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

    @property
    def closed(self) -> bool:
        return self._closed

    def publish_nowait(self, msg: Message) -> None:
        """Queue ``msg`` for every interested subscriber without waiting.

        For callers that cannot await (thread callbacks, sync code). Lossless
        subscriptions still lose nothing up to their hard cap.
        """
        if self._closed:
            return
        self.published += 1
        for sub in self._subs:
            if sub.wants(msg):
                sub._offer(msg)

    async def publish(self, msg: Message) -> None:
        """Queue ``msg`` for every interested subscriber, waiting for full lossless ones.

        Lossy subscribers never make this wait. A lossless one makes it wait for room,
        at most ``lossless_wait_s`` (then the message is dropped for that sink, counted
        and logged).
        """
        if self._closed:
            return
        deadline = None if self.lossless_wait_s is None else time.monotonic() + self.lossless_wait_s
        self.published += 1
        for sub in self._subs:
            if not sub.wants(msg):
                continue
            if sub.lossless and sub.full and not await sub._wait_room(deadline):
                sub._drop(f"did not make room within {self.lossless_wait_s} s")
                continue
            sub._offer(msg)

    def close(self) -> None:
        """End every subscription's iteration after the messages already queued."""
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub._items.append(_CLOSED)
            sub._ready.set()
