"""Kalman VA smoothing: rejects non-finite input, predicts through gaps, stays in range."""

from __future__ import annotations

import math

import pytest

from streamer.smoothing import VAFilter


def make() -> VAFilter:
    return VAFilter(process_noise_per_s=0.5, measurement_noise=0.05, initial_variance=0.25)


def test_noisy_constant_input_converges_and_variance_shrinks() -> None:
    f = make()
    outs = [f.step(i / 30, 0.5 + (0.2 if i % 2 else -0.2), -0.3) for i in range(60)]
    v, a, var = outs[-1]
    assert abs(v - 0.5) < 0.1 and abs(a + 0.3) < 1e-6
    assert var[0] < outs[0][2][0]
    # Smoothed jitter is far below the raw +-0.2.
    assert max(abs(o[0] - 0.5) for o in outs[30:]) < 0.1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected_predict_only(bad: float) -> None:
    f = make()
    for i in range(10):
        f.step(i / 30, 0.4, 0.1)
    _, _, var_before = f.step(10 / 30, 0.4, 0.1)
    v, a, var = f.step(1.0, bad, 0.1)
    assert math.isfinite(v) and math.isfinite(a)
    assert abs(v - 0.4) < 0.05
    assert var[0] > var_before[0], "a predict-only step grows the variance"
    assert f.rejected == 1


def test_missing_measurement_is_predict_only() -> None:
    f = make()
    f.step(0.0, 0.2, 0.2)
    v, a, var1 = f.step(0.5, None, None)
    _, _, var2 = f.step(1.0, None, None)
    assert (v, a) == pytest.approx((0.2, 0.2))
    assert var2[0] > var1[0]
    assert f.rejected == 0


def test_output_clamped_to_unit_range() -> None:
    f = make()
    for i in range(20):
        v, a, _ = f.step(i / 30, 5.0, -7.0)
        assert -1.0 <= v <= 1.0 and -1.0 <= a <= 1.0
    assert (v, a) == (1.0, -1.0)
