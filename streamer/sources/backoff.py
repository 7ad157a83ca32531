"""Capped, jittered exponential backoff that resets after a healthy period."""

from __future__ import annotations

import random
import time

from streamer.sources.config import BackoffConfig


class Backoff:
    """Delays between reconnect attempts.

    The n-th consecutive failure waits ``min(max_s, initial_s * multiplier**n)`` scaled
    by a uniform factor in ``[1 - jitter, 1]``, so no delay ever exceeds ``max_s``.
    :meth:`healthy` resets the sequence once the source has delivered frames for
    ``healthy_after_s`` without interruption.

    Args:
        cfg: the backoff section of a camera config.
        rng: random source (seeded in tests).
    """

    def __init__(self, cfg: BackoffConfig, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.failures = 0
        self._rng = rng or random.Random()
        self._healthy_since: float | None = None

    def next_delay(self) -> float:
        """Delay before the next attempt (seconds); counts one more failure."""
        cfg = self.cfg
        base = min(cfg.max_s, cfg.initial_s * cfg.multiplier ** min(self.failures, 64))
        self.failures += 1
        self._healthy_since = None
        return base * (1.0 - cfg.jitter * self._rng.random())

    def healthy(self, now: float | None = None) -> bool:
        """Note one good frame; resets the backoff after ``healthy_after_s`` of them.

        Returns:
            True when this call reset the failure count.
        """
        now = time.monotonic() if now is None else now
        if self._healthy_since is None:
            self._healthy_since = now
            return False
        if self.failures and now - self._healthy_since >= self.cfg.healthy_after_s:
            self.failures = 0
            return True
        return False

    def interrupted(self) -> None:
        """The healthy period ended (stream lost) before it was long enough."""
        self._healthy_since = None
