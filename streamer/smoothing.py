"""Per-track Kalman smoothing of (valence, arousal).

A constant-position model: the state is (valence, arousal), each step adds
``process_noise_per_s * dt`` of variance, a measurement has variance
``measurement_noise``. Non-finite measurements are rejected before the filter (the step
is then predict-only), and the output is clamped to [-1, 1].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streamer.messages import clamp_va


def kalman_filter_class() -> Any:
    """filterpy's ``KalmanFilter``, imported on first use: the import takes about a second
    (filterpy's package imports ``scipy.stats``), so commands that never smooth (predict,
    a replay without a confirmed track) do not pay it. Live runs call this before their
    cameras open."""
    from filterpy.kalman import KalmanFilter

    return KalmanFilter


class VAFilter:
    """Kalman filter over one track's VA trajectory (filterpy)."""

    def __init__(
        self, process_noise_per_s: float, measurement_noise: float, initial_variance: float
    ) -> None:
        self.q = process_noise_per_s
        self._kf = kalman_filter_class()(dim_x=2, dim_z=2)
        self._kf.F = np.eye(2)
        self._kf.H = np.eye(2)
        self._kf.R = np.eye(2) * measurement_noise
        self._kf.P = np.eye(2) * initial_variance
        self._kf.x = np.zeros((2, 1))
        self._t: float | None = None
        self._initialised = False
        self.rejected = 0  # non-finite measurements

    def step(
        self, t: float, valence: float | None, arousal: float | None
    ) -> tuple[float, float, tuple[float, float]]:
        """Advance to media time ``t`` and fold in a measurement if there is one.

        Returns:
            (valence, arousal, (var_valence, var_arousal)), clamped to [-1, 1].
        """
        dt = 0.0 if self._t is None else max(0.0, t - self._t)
        self._t = t
        measured = (
            valence is not None
            and arousal is not None
            and math.isfinite(valence)
            and math.isfinite(arousal)
        )
        if not measured and (valence is not None or arousal is not None):
            self.rejected += 1
        if measured and not self._initialised:
            # First measurement: start at it instead of pulling from (0, 0).
            self._kf.x = np.array([[valence], [arousal]], dtype=np.float64)
            self._initialised = True
        else:
            self._kf.Q = np.eye(2) * (self.q * dt)
            self._kf.predict()
            if measured:
                self._kf.update(np.array([valence, arousal], dtype=np.float64))
        x = self._kf.x[:, 0]
        # Clamp the state itself so a run of extreme values cannot drift it outside.
        self._kf.x[:, 0] = np.clip(x, -1.0, 1.0)
        var = (float(self._kf.P[0, 0]), float(self._kf.P[1, 1]))
        return clamp_va(float(x[0])), clamp_va(float(x[1])), var
