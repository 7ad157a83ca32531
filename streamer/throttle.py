"""Rate limits for log lines: the one throttle every module uses.

A warning a peer can trigger (a hostile MQTT message, a slow sink, a flapping camera)
must not flood the log. ``LogThrottle`` lets one line through per interval and counts
what it held back, so the next line that passes can say how many were suppressed.

    _warn = LogThrottle(10.0)
    if _warn.ready():
        logger.warning("bad payload on %s (%d similar suppressed)", topic, _warn.take_suppressed())
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LogThrottle:
    """Allow one event per ``interval_s`` (monotonic clock); count the rest.

    Args:
        interval_s: minimum seconds between two allowed events.
        clock: monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._next = float("-inf")
        self.suppressed = 0

    def ready(self) -> bool:
        """True when an event may be logged now (and starts a new interval)."""
        now = self._clock()
        if now >= self._next:
            self._next = now + self.interval_s
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many events were held back since the last call; resets the count."""
        n, self.suppressed = self.suppressed, 0
        return n
