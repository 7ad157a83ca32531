"""Recent observations of a quantity (seconds of a stage, a request's latency).

A stage records into a :class:`RecentSamples`; a reader that wants every observation
once (the Prometheus histograms of ``streamer.web.metrics``) keeps the ``count`` it has
seen and asks for what came after. Bounded: only the latest ``maxlen`` are kept, so a
reader that comes back rarely sees at most that many of the newest ones. The room for
them is taken at once (8 bytes each), so the memory of a long run does not creep up
while the window fills.
"""

from __future__ import annotations

import array
import threading
from collections.abc import Iterator

DEFAULT_KEPT = 4096  # observations kept for readers


class RecentSamples:
    """The latest observations and how many there were in all (thread-safe)."""

    def __init__(self, maxlen: int = DEFAULT_KEPT) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be > 0, got {maxlen}")
        self.maxlen = maxlen
        self._ring = array.array("d", bytes(8 * maxlen))
        self._lock = threading.Lock()
        self.count = 0

    def add(self, value: float) -> None:
        with self._lock:
            self._ring[self.count % self.maxlen] = value
            self.count += 1

    append = add

    def _latest(self, n: int) -> list[float]:
        """The newest ``n`` (at most what is kept), oldest first; hold the lock."""
        n = min(n, self.count, self.maxlen)
        ring, size, end = self._ring, self.maxlen, self.count
        return [ring[i % size] for i in range(end - n, end)]

    def since(self, seen: int) -> tuple[list[float], int]:
        """Observations after the first ``seen`` ones (at most ``maxlen``), and the new count."""
        with self._lock:
            new = self.count - seen
            if new <= 0:
                return [], self.count
            return self._latest(new), self.count

    def __iter__(self) -> Iterator[float]:
        """The kept observations, oldest first (a copy)."""
        with self._lock:
            return iter(self._latest(self.maxlen))

    def __len__(self) -> int:
        return min(self.count, self.maxlen)
