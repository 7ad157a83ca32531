"""The event bus: in-process fan-out of pipeline messages to stages and sinks.

Every stage after the tracks (describer, episodes, summary) and every sink (JSONL, MQTT,
web, metrics, history) talks only to the bus. Each subscriber owns a queue; the two kinds
differ only in what happens when a subscriber falls behind::

    lossy (default)    a queued message is dropped and counted: the oldest VA sample
                       (the next sample of its track supersedes it), else the oldest
                       message; a slow broker, LLM or browser can never slow the
                       video, and a burst of samples never pushes out the ``lost``
                       event, episode or camera status that a sink's state (a face
                       count, a Home Assistant sensor) depends on.
    lossless=True      never dropped by a full queue, whichever publish call is used:
                       ``await bus.publish(msg)`` waits for room (backpressure);
                       ``bus.publish_nowait(msg)``, for callers that cannot wait, may
                       queue past ``maxsize`` up to a hard cap of ``maxsize *
                       LOSSLESS_OVERFLOW_FACTOR``, and past it raises
                       :class:`~streamer.errors.BusFullError` having queued the message
                       for no subscriber: the caller knows, nothing is lost silently.

How long ``publish`` waits is the bus's ``lossless_wait_s``:

* ``None`` (replay): wait as long as it takes. Nothing is ever lost; a slow sink slows
  the replay instead.
* a number of seconds (live runs): wait at most that long for the slowest lossless
  sink, then drop the message *for that sink only*, count it in ``Subscription.dropped``
  and log a warning (rate-limited). A live camera cannot wait for a full disk forever,
  but a loss is never silent.

Previews (:class:`~streamer.messages.PreviewFrame`, an analysed frame with its image)
reach only the subscriptions made with ``previews=True``, which must be lossy: an image
is never held in a queue that waits.

>>> import asyncio
>>> from streamer.bus import EventBus
>>> from streamer.messages import TrackEvent, TrackEventKind
>>> async def replay_two_events() -> list[str]:
...     bus = EventBus()                                  # replay: lossless waits forever
...     sub = bus.subscribe("jsonl", maxsize=4096, lossless=True)
...     await bus.publish(TrackEvent("cam", 1, TrackEventKind.APPEARED, 0, 0.0))
...     bus.publish_nowait(TrackEvent("cam", 1, TrackEventKind.LOST, 9, 0.3))
...     bus.close()
...     return [msg.kind.value async for msg in sub]      # ends after bus.close()
>>> asyncio.run(replay_two_events())
['appeared', 'lost']
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from streamer.errors import BusFullError
from streamer.messages import Message, PreviewFrame, VASample
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

LOSSLESS_OVERFLOW_FACTOR = 4  # hard cap of a lossless queue fed by publish_nowait, x maxsize
PREVIEW_QUEUE = 2  # preview frames queued per preview subscription (lossy)
EVICT_SCAN = 64  # queued messages a full lossy queue looks through for a sample to drop
DROP_WARNING_INTERVAL_S = 10.0  # at most one "sink is slow" warning per sink per interval


class _Closed:
    """The end marker queued behind the last message of a closed subscription."""


_CLOSED = _Closed()

T = TypeVar("T", Message, PreviewFrame)


class _Queue(Generic[T]):
    """A subscriber's queue on the bus (see :class:`Subscription`)."""

    def __init__(
        self,
        name: str,
        maxsize: int,
        lossless: bool,
        accept: Callable[[T], bool] | None,
    ) -> None:
        if maxsize <= 0:
            raise ValueError(f"subscription {name!r}: maxsize must be > 0, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.lossless = lossless
        self.accept: Callable[[T], bool] | None = accept
        self.dropped = 0
        self.delivered = 0
        self._items: collections.deque[T | _Closed] = collections.deque()
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

    @property
    def at_hard_cap(self) -> bool:
        """A lossless queue as long as ``publish_nowait`` may make it."""
        return len(self._items) >= self.maxsize * LOSSLESS_OVERFLOW_FACTOR

    def wants(self, msg: T) -> bool:
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

    def _offer(self, msg: T) -> None:
        """Queue ``msg`` without waiting: a full lossy queue drops one (see :meth:`_evict`);
        a lossless one grows (the publisher checked :attr:`at_hard_cap` first)."""
        if self._closed:
            return
        if self.full and not self.lossless:
            self._evict()
            self._drop("is slow")
        self._items.append(msg)
        self._ready.set()
        if self.full:
            self._room.clear()

    def _evict(self) -> None:
        """Make room in a full lossy queue: the oldest VA sample or preview among the
        first :data:`EVICT_SCAN` queued (superseded by the next of its kind), else the
        oldest message."""
        for i in range(min(EVICT_SCAN, len(self._items))):
            if isinstance(self._items[i], VASample | PreviewFrame):
                del self._items[i]
                return
        self._items.popleft()

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

    def _end(self) -> None:
        self._items.append(_CLOSED)
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
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

    def get_nowait(self) -> T | None:
        """Next message or None when empty (for sinks that batch)."""
        if not self._items or isinstance(item := self._items[0], _Closed):
            return None
        self._items.popleft()
        self._took()
        self.delivered += 1
        return item


class Subscription(_Queue[Message]):
    """A sink's view of the bus: an async iterator over the messages it accepts.

    Attributes:
        name: the sink's name (logs and metrics).
        maxsize: queue length at which a lossy queue drops a message (the oldest sample
            first) and a lossless one makes ``publish`` wait.
        lossless: see the module docstring.
        dropped: messages this subscriber never received.
        delivered: messages handed to the subscriber.
    """


class PreviewSubscription(_Queue[PreviewFrame]):
    """A lossy queue of :class:`~streamer.messages.PreviewFrame` (``bus.subscribe_previews``):
    only the newest ``maxsize`` frames are kept, so an image is never held for long."""


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
        self._previews: list[PreviewSubscription] = []
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

    def subscribe_previews(self, name: str, maxsize: int = PREVIEW_QUEUE) -> PreviewSubscription:
        """Add a reader of analysed frames with their images (always lossy)."""
        sub = PreviewSubscription(name, maxsize, False, None)
        self._previews.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription | PreviewSubscription) -> None:
        if isinstance(sub, PreviewSubscription):
            if sub in self._previews:
                self._previews.remove(sub)
        elif sub in self._subs:
            self._subs.remove(sub)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subs)

    @property
    def wants_previews(self) -> bool:
        """Whether any subscriber reads preview frames (else none need be built)."""
        return bool(self._previews) and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def publish_nowait(self, msg: Message) -> None:
        """Queue ``msg`` for every interested subscriber without waiting.

        For callers that cannot await (thread callbacks, sync code). A lossless
        subscriber may grow past its ``maxsize`` up to its hard cap; past it the message
        is queued for no one and the caller is told.

        Raises:
            BusFullError: an interested lossless subscriber is at its hard cap.
        """
        if self._closed:
            return
        wanting = [sub for sub in self._subs if sub.wants(msg)]
        full = [sub.name for sub in wanting if sub.lossless and sub.at_hard_cap]
        if full:
            raise BusFullError(
                f"lossless sink(s) {', '.join(full)} full: {type(msg).__name__} not "
                "published (use `await bus.publish(...)` to wait for room)"
            )
        self.published += 1
        for sub in wanting:
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

    def publish_preview(self, frame: PreviewFrame) -> None:
        """Offer an analysed frame to the preview subscribers (lossy: never waits)."""
        if self._closed:
            return
        for sub in self._previews:
            sub._offer(frame)

    def close(self) -> None:
        """End every subscription's iteration after the messages already queued."""
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub._end()
        for preview in self._previews:
            preview._end()
