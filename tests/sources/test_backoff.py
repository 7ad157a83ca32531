"""Capped, jittered exponential backoff that resets after a healthy period."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from streamer.sources.backoff import Backoff
from streamer.sources.config import BackoffConfig


def test_grows_exponentially_and_is_capped() -> None:
    cfg = BackoffConfig(initial_s=0.5, max_s=8.0, multiplier=2.0, jitter=0.0)
    b = Backoff(cfg)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_stays_within_bounds_and_varies() -> None:
    cfg = BackoffConfig(initial_s=1.0, max_s=4.0, multiplier=2.0, jitter=0.5)
    delays = []
    for seed in range(200):
        b = Backoff(cfg, random.Random(seed))
        delays.append([b.next_delay() for _ in range(5)])
    for seq in delays:
        for n, d in enumerate(seq):
            base = min(4.0, 2.0**n)
            assert base * 0.5 <= d <= base
    firsts = {round(seq[0], 6) for seq in delays}
    assert len(firsts) > 100  # cameras do not retry in lockstep


def test_never_exceeds_max_after_many_failures() -> None:
    b = Backoff(BackoffConfig(initial_s=0.1, max_s=30.0, jitter=0.2))
    assert max(b.next_delay() for _ in range(10_000)) <= 30.0


def test_resets_only_after_a_full_healthy_period() -> None:
    cfg = BackoffConfig(initial_s=1.0, max_s=60.0, jitter=0.0, healthy_after_s=10.0)
    b = Backoff(cfg)
    for _ in range(4):
        b.next_delay()
    assert b.failures == 4
    # Frames for 9 s, then a drop: not healthy long enough, no reset.
    assert not b.healthy(100.0)
    assert not b.healthy(109.0)
    b.interrupted()
    assert b.next_delay() == 16.0
    # Frames for 10 s in a row: reset.
    assert not b.healthy(200.0)
    assert not b.healthy(205.0)
    assert b.healthy(210.0)
    assert b.failures == 0
    assert b.next_delay() == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        {"initial_s": 0},
        {"initial_s": 10, "max_s": 5},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"healthy_after_s": -1},
        {"retry_s": 1},
    ],
)
def test_bad_backoff_config_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        BackoffConfig(**bad)
