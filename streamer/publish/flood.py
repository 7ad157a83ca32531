"""Guards against floods a peer on the broker can cause.

* :func:`mqtt_client_logger`: the logger handed to aiomqtt (and through it to paho).
  The library warns once per discarded message ("Message queue is full. Discarding
  message."), so a peer flooding a subscribed topic would flood the log; here every
  distinct warning passes at most once per interval (:class:`~streamer.throttle.LogThrottle`)
  and the next one that passes says how many were suppressed.
* :class:`Coalescer`: runs an action at most once per interval; triggers in between are
  merged into one run at the end of the interval (Home Assistant's ``online`` re-announces
  discovery: 5000 of them must not queue 5000 announcements).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streamer.throttle import LogThrottle

MQTT_CLIENT_LOGGER = "streamer.mqtt.client"
LIBRARY_WARNING_INTERVAL_S = 10.0


class ThrottleFilter(logging.Filter):
    """Lets each distinct message template at WARNING or above through once per interval."""

    def __init__(self, interval_s: float = LIBRARY_WARNING_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._throttles: dict[str, LogThrottle] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = str(record.msg)[:200]
        throttle = self._throttles.get(key)
        if throttle is None:
            if len(self._throttles) > 1000:  # templates are few; bound it anyway
                self._throttles.clear()
            throttle = self._throttles[key] = LogThrottle(self.interval_s)
        if not throttle.ready():
            return False
        suppressed = throttle.take_suppressed()
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} similar suppressed)"
            record.args = ()
        return True


def mqtt_client_logger() -> logging.Logger:
    """The (shared) logger for aiomqtt clients, its warnings rate-limited."""
    log = logging.getLogger(MQTT_CLIENT_LOGGER)
    if not any(isinstance(f, ThrottleFilter) for f in log.filters):
        log.addFilter(ThrottleFilter())
    return log


class Coalescer:
    """Run ``action`` at once, but at most once per ``interval_s``; merge the rest.

    A trigger inside the interval schedules one run at its end (never more than one
    pending); ``merged`` counts the triggers that did not cause a run of their own.
    """

    def __init__(self, interval_s: float, action: Callable[[], None]) -> None:
        self.interval_s = interval_s
        self.action = action
        self.merged = 0
        self._throttle = LogThrottle(interval_s)
        self._pending: asyncio.TimerHandle | None = None

    def trigger(self) -> bool:
        """Request a run; True when it ran now."""
        if self._pending is None and self._throttle.ready():
            self.action()
            return True
        self.merged += 1
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.interval_s, self._fire)
        return False

    def _fire(self) -> None:
        self._pending = None
        self._throttle.ready()  # a new interval starts with this run
        self.action()

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
