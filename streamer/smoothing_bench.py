"""Jitter and step lag of the VA smoothing on real trajectories (``bench smoothing``).

Both figures are taken per track and per dimension (valence, arousal) from the raw and
the smoothed values of the same replay:

* **step**: the index where the mean of the next ``STEP_WINDOW`` raw values differs most
  from the mean of the previous ``STEP_WINDOW``; a difference of at least ``MIN_STEP``
  VA units is a step (an expression change).
* **jitter**: root mean square of the frame-to-frame change, outside the step
  (``STEP_WINDOW`` frames before to ``2 * STEP_WINDOW`` after it), raw and smoothed;
  ``jitter_reduction`` = raw / smoothed.
* **step lag**: media seconds between the raw trajectory (3-frame median) and the
  smoothed one crossing the step's midpoint.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence

STEP_WINDOW = 5  # frames on each side of a step candidate
MIN_STEP = 0.3  # VA units: a smaller change of level is not a step


def find_step(raw: Sequence[float]) -> tuple[int, float] | None:
    """(index, height) of the largest step in ``raw``, or None below ``MIN_STEP``."""
    w = STEP_WINDOW
    best: tuple[int, float] | None = None
    for i in range(w, len(raw) - w + 1):
        h = statistics.fmean(raw[i : i + w]) - statistics.fmean(raw[i - w : i])
        if best is None or abs(h) > abs(best[1]):
            best = (i, h)
    if best is None or abs(best[1]) < MIN_STEP:
        return None
    return best


def _crossing(
    ts: Sequence[float], xs: Sequence[float], start: int, level: float, up: bool
) -> float:
    for i in range(max(start, 1), len(xs)):
        a, b = xs[i - 1], xs[i]
        if (up and a < level <= b) or (not up and a > level >= b):
            return ts[i - 1] + (ts[i] - ts[i - 1]) * (level - a) / (b - a)
    return math.inf


def _median3(xs: Sequence[float]) -> list[float]:
    return [statistics.median(xs[max(0, i - 1) : i + 2]) for i in range(len(xs))]


def trajectory_figures(
    ts: Sequence[float], raw: Sequence[float], smoothed: Sequence[float]
) -> dict[str, float | None]:
    """Jitter (raw, smoothed, reduction) and step lag of one dimension of one track."""
    step = find_step(raw)
    keep = list(range(len(raw)))
    lag_s = None
    if step is not None:
        i, h = step
        lo, hi = i - STEP_WINDOW, i + 2 * STEP_WINDOW
        keep = [k for k in keep if k < lo or k > hi]
        before = statistics.fmean(raw[i - STEP_WINDOW : i])
        level = before + h / 2
        start = i - STEP_WINDOW
        t_raw = _crossing(ts, _median3(raw), start, level, h > 0)
        t_smooth = _crossing(ts, smoothed, start, level, h > 0)
        if math.isfinite(t_raw) and math.isfinite(t_smooth):
            lag_s = t_smooth - t_raw
    # Jitter over the runs of consecutive kept frames.
    runs: list[list[int]] = []
    for k in keep:
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    sq_raw = sq_sm = 0.0
    n = 0
    for run in runs:
        for a, b in itertools.pairwise(run):
            sq_raw += (raw[b] - raw[a]) ** 2
            sq_sm += (smoothed[b] - smoothed[a]) ** 2
            n += 1
    j_raw = math.sqrt(sq_raw / n) if n else None
    j_sm = math.sqrt(sq_sm / n) if n else None
    return {
        "jitter_raw": None if j_raw is None else round(j_raw, 5),
        "jitter_smoothed": None if j_sm is None else round(j_sm, 5),
        "jitter_reduction": round(j_raw / j_sm, 2) if j_raw and j_sm else None,
        "step": None if step is None else round(step[1], 3),
        "step_lag_ms": None if lag_s is None else round(lag_s * 1000.0, 1),
    }
