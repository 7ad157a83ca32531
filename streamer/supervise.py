"""Supervision of restartable work: the one restart-storm guard of the package.

A stage that keeps failing and being restarted must not spin: :class:`RestartGuard`
counts restarts in a sliding window and says when they became a storm. Its users:

- the affect engine (:mod:`streamer.affect.engine`): a hung model call restarts the
  worker thread; a storm marks the stage degraded (faces get no VA for a while);
- the live run (:mod:`streamer.cli.run`): a camera's analysis that fails or hangs is
  restarted after a :class:`~streamer.backoff.Backoff` delay; a storm marks it
  degraded and restarts then wait the longest delay.

    guard = RestartGuard(max_restarts=3, window_s=300.0)
    n = guard.record()          # on each restart: restarts within the window
    if guard.storm: ...         # more than max_restarts within window_s
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass


class RestartGuard:
    """Restarts within a sliding window; more than ``max_restarts`` of them is a storm.

    Args:
        max_restarts: restarts allowed within ``window_s`` before it is a storm.
        window_s: the window, seconds.
        clock: monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self, max_restarts: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_restarts < 0 or window_s <= 0:
            raise ValueError(
                f"expected max_restarts >= 0 and window_s > 0, got {max_restarts}, {window_s}"
            )
        self.max_restarts = max_restarts
        self.window_s = window_s
        self._clock = clock
        self._times: collections.deque[float] = collections.deque()

    def record(self) -> int:
        """Count one restart now; returns the restarts within the window, this one included."""
        now = self._clock()
        self._times.append(now)
        return self.count(now)

    def count(self, now: float | None = None) -> int:
        """Restarts within the window ending ``now`` (default: the clock's now)."""
        now = self._clock() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times)

    @property
    def storm(self) -> bool:
        """True when more than ``max_restarts`` restarts fell within the window."""
        return self.count() > self.max_restarts


@dataclass(frozen=True)
class RestartPolicy:
    """How a live run supervises each camera's analysis.

    Attributes:
        hang_timeout_s: frames arriving but none analysed this long is a hang.
        restart_initial_s: delay before the first restart (doubles per restart in the
            storm window).
        restart_max_s: cap of that delay; the delay of every restart once degraded.
        storm_restarts: more restarts than this within ``storm_window_s``: degraded.
        storm_window_s: the storm window, seconds.
    """

    hang_timeout_s: float = 10.0
    restart_initial_s: float = 0.5
    restart_max_s: float = 30.0
    storm_restarts: int = 3
    storm_window_s: float = 300.0


__all__ = ["RestartGuard", "RestartPolicy"]
