"""Capped, jittered exponential backoff: the one retry-delay helper of the package.

Its users: camera reconnects (:mod:`streamer.sources.live`), MQTT reconnects
(:mod:`streamer.publish.mqtt`, ``streamer subscribe``), the describer after failed LLM
requests, and the restart of a camera's analysis (:mod:`streamer.supervise`).

    backoff = Backoff(cfg.backoff)          # any object with the five settings below
    delay_s = backoff.next_delay()          # after a failure
    backoff.reset()                         # after a success
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Protocol


class BackoffSettings(Protocol):
    """What a backoff needs; a camera's ``backoff`` config section is one."""

    @property
    def initial_s(self) -> float: ...
    @property
    def max_s(self) -> float: ...
    @property
    def multiplier(self) -> float: ...
    @property
    def jitter(self) -> float: ...
    @property
    def healthy_after_s(self) -> float: ...


@dataclass(frozen=True)
class BackoffPolicy:
    """Backoff settings for callers without a config section of that shape.

    Attributes:
        initial_s: the delay of the first retry (before jitter).
        max_s: upper bound of any delay.
        multiplier: growth factor per failure.
        jitter: each delay is scaled by a uniform factor in ``[1 - jitter, 1]``.
        healthy_after_s: :meth:`Backoff.healthy` resets after this long (inf: never).
    """

    initial_s: float
    max_s: float
    multiplier: float = 2.0
    jitter: float = 0.0
    healthy_after_s: float = math.inf

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"expected 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.multiplier < 1.0 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError(
                f"expected multiplier >= 1 and jitter in [0, 1], got {self.multiplier}, "
                f"{self.jitter}"
            )


class Backoff:
    """Delays between retries.

    The n-th consecutive failure (n from 0) waits ``min(max_s, initial_s *
    multiplier**n)`` scaled by a uniform factor in ``[1 - jitter, 1]``, so no delay ever
    exceeds ``max_s``. :meth:`reset` starts over; :meth:`healthy` resets the sequence
    once a stream has been healthy for ``healthy_after_s`` without interruption.

    Args:
        cfg: the settings (a camera's backoff config section, or a :class:`BackoffPolicy`).
        rng: random source (seeded in tests).
    """

    def __init__(self, cfg: BackoffSettings, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.failures = 0
        self._rng = rng or random.Random()
        self._healthy_since: float | None = None

    def delay_for(self, attempt: int) -> float:
        """The (jittered) delay of retry number ``attempt`` (0 = the first)."""
        cfg = self.cfg
        base = min(cfg.max_s, cfg.initial_s * cfg.multiplier ** min(max(attempt, 0), 64))
        return base * (1.0 - cfg.jitter * self._rng.random())

    def next_delay(self) -> float:
        """Delay before the next attempt (seconds); counts one more failure."""
        delay = self.delay_for(self.failures)
        self.failures += 1
        self._healthy_since = None
        return delay

    def reset(self) -> None:
        """A success: the next failure waits the initial delay again."""
        self.failures = 0
        self._healthy_since = None

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


__all__ = ["Backoff", "BackoffPolicy", "BackoffSettings"]
