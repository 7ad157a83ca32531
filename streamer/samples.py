"""Recent observations of a quantity (seconds of a stage, a request's latency).

A stage records into a :class:`RecentSamples`; a reader that wants every observation
once (the Prometheus histograms of ``streamer.web.metrics``) keeps the ``count`` it has
seen and asks for what came after. Bounded: only the latest ``maxlen`` are kept, so a
reader that comes back rarely sees at most that many of the newest ones.
"""

from __future__ import annotations

import collections
import threading

DEFAULT_KEPT = 4096  # observations kept for readers


class RecentSamples:
    """The latest observations and how many there were in all (thread-safe)."""

    def __init__(self, maxlen: int = DEFAULT_KEPT) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be > 0, got {maxlen}")
        self._items: collections.deque[float] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, value: float) -> None:
        with self._lock:
            self._items.append(value)
            self.count += 1

    def since(self, seen: int) -> tuple[list[float], int]:
        """Observations after the first ``seen`` ones (at most ``maxlen``), and the new count."""
        with self._lock:
            new = self.count - seen
            if new <= 0:
                return [], self.count
            items = list(self._items)
            return items[-new:] if new < len(items) else items, self.count

    def __len__(self) -> int:
        return len(self._items)
