"""The bounded outbound buffer of the MQTT publisher.

Policy (what survives while the broker is slow or away):

- **state** (retained camera status, face count, availability): the newest per topic
  wins; these are few (one per camera) and always go out first after a reconnect, so
  retained state reflects *now*.
- **events, descriptions and discovery configs** (QoS 1): kept in order up to
  ``max_events``; when full the oldest is dropped (``dropped["event_overflow"]``).
- **VA** (QoS 0 telemetry): the newest sample per track wins (``superseded``, not a
  loss); at most ``max_tracks`` tracks are held (oldest track dropped,
  ``dropped["va_overflow"]``); a sample older than ``stale_s`` when its turn comes is
  dropped (``dropped["va_stale"]``).

Putting never blocks and never waits for the network.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable

from streamer.publish.payloads import Outbound


class OutboundBuffer:
    """Bounded, policy-driven queue between the bus intake and the MQTT sender."""

    def __init__(
        self,
        max_events: int,
        max_tracks: int,
        stale_s: float,
        clock: Callable[[], float] = time.monotonic,
        dropped: collections.Counter[str] | None = None,
    ) -> None:
        if max_events <= 0 or max_tracks <= 0 or stale_s <= 0:
            raise ValueError(
                f"expected positive limits, got max_events={max_events}, "
                f"max_tracks={max_tracks}, stale_s={stale_s}"
            )
        self.max_events = max_events
        self.max_tracks = max_tracks
        self.stale_s = stale_s
        self._clock = clock
        self._state: dict[str, Outbound] = {}
        self._events: collections.deque[Outbound] = collections.deque()
        self._va: collections.OrderedDict[Hashable, tuple[float, Outbound]] = (
            collections.OrderedDict()
        )
        self._ready = asyncio.Event()
        # Losses by reason; the publisher passes its stats counter to share it.
        self.dropped: collections.Counter[str] = (
            dropped if dropped is not None else collections.Counter()
        )
        self.superseded = 0

    def __len__(self) -> int:
        return len(self._state) + len(self._events) + len(self._va)

    @property
    def pending_va(self) -> int:
        return len(self._va)

    @property
    def pending_events(self) -> int:
        return len(self._events)

    def put_state(self, item: Outbound) -> None:
        """Retained state: the newest per topic replaces an unsent older one."""
        self._state.pop(item.topic, None)
        self._state[item.topic] = item
        self._ready.set()

    def put_event(self, item: Outbound) -> None:
        """An event, description or discovery config: kept in order, oldest dropped."""
        if len(self._events) >= self.max_events:
            self._events.popleft()
            self.dropped["event_overflow"] += 1
        self._events.append(item)
        self._ready.set()

    def put_va(self, key: Hashable, item: Outbound) -> None:
        """Telemetry of one track: the newest replaces an unsent older sample."""
        if key in self._va:
            del self._va[key]
            self.superseded += 1
        elif len(self._va) >= self.max_tracks:
            self._va.popitem(last=False)
            self.dropped["va_overflow"] += 1
        self._va[key] = (self._clock(), item)
        self._ready.set()

    def requeue(self, item: Outbound) -> None:
        """Put back an event that could not be confirmed (it goes out first)."""
        if item.retain:
            self._state.setdefault(item.topic, item)
        else:
            if len(self._events) >= self.max_events:
                self.dropped["event_overflow"] += 1
                return
            self._events.appendleft(item)
        self._ready.set()

    def drop_stale(self) -> int:
        """Drop VA samples older than ``stale_s``; returns how many."""
        now = self._clock()
        n = 0
        while self._va:
            key, (queued_at, _) = next(iter(self._va.items()))
            if now - queued_at <= self.stale_s:
                break
            del self._va[key]
            n += 1
        self.dropped["va_stale"] += n
        return n

    def pop(self) -> Outbound | None:
        """The next publication (state, then events, then VA), or None when empty."""
        if self._state:
            topic = next(iter(self._state))
            return self._state.pop(topic)
        if self._events:
            return self._events.popleft()
        self.drop_stale()
        if self._va:
            _, (_, item) = self._va.popitem(last=False)
            return item
        return None

    async def wait(self) -> None:
        """Return once something may be waiting (spurious wake-ups are possible)."""
        if len(self):
            return
        self._ready.clear()
        await self._ready.wait()
