"""The one log throttle: one event per interval, the rest counted."""

from __future__ import annotations

import logging

import pytest

from streamer.throttle import LogThrottle


def test_one_event_per_interval_and_suppressed_are_counted() -> None:
    now = [100.0]
    th = LogThrottle(10.0, clock=lambda: now[0])
    allowed = []
    for step in range(25):
        now[0] = 100.0 + step  # one event per second for 25 s
        allowed.append(th.ready())
    assert [i for i, ok in enumerate(allowed) if ok] == [0, 10, 20]
    assert th.take_suppressed() == 22
    assert th.take_suppressed() == 0


def test_zero_interval_lets_everything_through() -> None:
    th = LogThrottle(0.0, clock=lambda: 1.0)
    assert all(th.ready() for _ in range(5))


def test_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LogThrottle(-1.0)


def test_burst_lets_that_many_through_per_interval() -> None:
    now = [0.0]
    th = LogThrottle(10.0, clock=lambda: now[0], burst=3)
    assert [th.ready() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 10.0
    assert [th.ready() for _ in range(4)] == [True, True, True, False]
    assert th.take_suppressed() == 3


def test_log_says_how_many_were_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    th = LogThrottle(10.0, clock=lambda: now[0])
    log = logging.getLogger("streamer.test.throttle")
    caplog.set_level(logging.WARNING, logger="streamer.test.throttle")
    assert th.log(log, logging.WARNING, "bad input %s", "a")
    assert not th.log(log, logging.WARNING, "bad input %s", "b")
    assert not th.log(log, logging.WARNING, "bad input %s", "c")
    now[0] = 11.0
    assert th.log(log, logging.WARNING, "bad input %s", "d")
    assert [r.getMessage() for r in caplog.records] == [
        "bad input a",
        "bad input d (2 similar suppressed)",
    ]


def test_bad_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        LogThrottle(1.0, burst=0)
