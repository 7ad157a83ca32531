"""The one restart-storm guard: a sliding window of restarts."""

from __future__ import annotations

import pytest

from streamer.supervise import RestartGuard


def test_more_restarts_than_allowed_within_the_window_is_a_storm() -> None:
    now = [0.0]
    guard = RestartGuard(max_restarts=2, window_s=60.0, clock=lambda: now[0])
    assert [guard.record() for _ in range(2)] == [1, 2]
    assert not guard.storm
    now[0] = 30.0
    assert guard.record() == 3
    assert guard.storm
    # The first two age out of the window: no storm any more.
    now[0] = 61.0
    assert guard.count() == 1 and not guard.storm


def test_restarts_spread_out_never_make_a_storm() -> None:
    now = [0.0]
    guard = RestartGuard(max_restarts=1, window_s=10.0, clock=lambda: now[0])
    for i in range(20):
        now[0] = 11.0 * i
        assert guard.record() == 1
        assert not guard.storm


@pytest.mark.parametrize(("max_restarts", "window_s"), [(-1, 1.0), (1, 0.0)])
def test_bad_limits_are_refused(max_restarts: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="expected"):
        RestartGuard(max_restarts, window_s)
