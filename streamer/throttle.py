"""Rate limits for log lines: the one throttle every module uses.

A warning a peer can trigger (a hostile MQTT message, a slow sink, a flapping camera)
must not flood the log. ``LogThrottle`` lets one line through per interval and counts
what it held back, so the next line that passes can say how many were suppressed.

    _warn = LogThrottle(10.0)
    if _warn.ready():
        logger.warning("bad payload on %s (%d similar suppressed)", topic, _warn.take_suppressed())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class LogThrottle:
    """Allow ``burst`` events per ``interval_s`` (monotonic clock); count the rest.

    Args:
        interval_s: length of an interval; the first allowed event starts one.
        clock: monotonic clock in seconds (tests pass a fake one).
        burst: events allowed within one interval (1: one line per interval).
    """

    def __init__(
        self, interval_s: float, clock: Callable[[], float] = time.monotonic, burst: int = 1
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.interval_s = interval_s
        self.burst = burst
        self._clock = clock
        self._next = float("-inf")
        self._in_interval = 0
        self.suppressed = 0

    def ready(self) -> bool:
        """True when an event may be logged now (the first of an interval starts it)."""
        now = self._clock()
        if now >= self._next:
            self._next = now + self.interval_s
            self._in_interval = 0
        if self._in_interval < self.burst:
            self._in_interval += 1
            return True
        self.suppressed += 1
        return False

    def log(self, log: logging.Logger, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` when :meth:`ready`, saying how many lines were held back.

        Returns:
            True when the line was logged.
        """
        if not self.ready():
            return False
        held = self.take_suppressed()
        if held:
            log.log(level, msg + " (%d similar suppressed)", *args, held)
        else:
            log.log(level, msg, *args)
        return True

    def take_suppressed(self) -> int:
        """How many events were held back since the last call; resets the count."""
        n, self.suppressed = self.suppressed, 0
        return n
