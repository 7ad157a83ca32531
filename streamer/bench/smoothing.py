"""``streamer bench smoothing VIDEO ...``: jitter reduction and step lag of the VA filter.

Replays each video with the config's smoothing (or the overrides given) and prints, per
clip and track, the frame-to-frame jitter of the raw and the smoothed valence and arousal
and the lag of the smoothed trajectory on the largest step, as JSON. The target the
defaults are tuned for: at least 3x less jitter with at most 150 ms lag on a step.

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

import argparse
import asyncio
import itertools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamer.bench.harness import emit
from streamer.bus import Subscription
from streamer.config import AppConfig, load_config
from streamer.messages import Message, VASample
from streamer.runtime.replay import BusReader, run_replay

TARGET_JITTER_REDUCTION = 3.0
TARGET_STEP_LAG_MS = 150.0
MIN_TRACK_SAMPLES = 10
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("smoothing", help="jitter reduction and step lag of the VA smoothing")
    p.add_argument("videos", type=Path, nargs="+", help="video files")
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--process-noise-per-s", type=float, help="override smoothing value")
    p.add_argument("--measurement-noise", type=float, help="override smoothing value")
    p.set_defaults(func=cmd_bench_smoothing)


def _is_va(msg: Message) -> bool:
    return isinstance(msg, VASample)


async def _samples(cfg: AppConfig, path: Path) -> list[VASample]:
    got: list[VASample] = []

    async def collect(sub: Subscription) -> None:
        async for msg in sub:
            assert isinstance(msg, VASample)
            got.append(msg)

    await run_replay(cfg, path, readers=[BusReader("bench", collect, accept=_is_va)])
    return got


def clip_figures(samples: list[VASample]) -> list[dict[str, Any]]:
    """Figures per track with at least ``MIN_TRACK_SAMPLES`` measured samples."""
    tracks: dict[int, list[VASample]] = {}
    for s in samples:
        if s.valence_raw is not None and s.arousal_raw is not None:
            tracks.setdefault(s.track_id, []).append(s)
    out = []
    for tid, rows in sorted(tracks.items()):
        if len(rows) < MIN_TRACK_SAMPLES:
            continue
        ts = [r.t for r in rows]
        out.append(
            {
                "track_id": tid,
                "samples": len(rows),
                "valence": trajectory_figures(
                    ts, [r.valence_raw or 0.0 for r in rows], [r.valence for r in rows]
                ),
                "arousal": trajectory_figures(
                    ts, [r.arousal_raw or 0.0 for r in rows], [r.arousal for r in rows]
                ),
            }
        )
    return out


def _config(args: argparse.Namespace) -> AppConfig:
    cfg = load_config(args.config) if args.config else AppConfig()
    overrides = {
        k: v
        for k, v in (
            ("process_noise_per_s", args.process_noise_per_s),
            ("measurement_noise", args.measurement_noise),
        )
        if v is not None
    }
    if overrides:
        data = cfg.model_dump()
        data["smoothing"].update(overrides)
        cfg = AppConfig.model_validate(data)
    # Only VA matters here: no sinks, no episodes.
    return cfg.model_copy(update={"mqtt": None, "llm": None, "episodes": None, "mood": None})


def cmd_bench_smoothing(args: argparse.Namespace) -> int:
    cfg = _config(args)
    clips = []
    reductions: list[float] = []
    lags: list[float] = []
    for video in args.videos:
        tracks = clip_figures(asyncio.run(_samples(cfg, video)))
        for tr in tracks:
            for dim in ("valence", "arousal"):
                fig = tr[dim]
                if fig["jitter_reduction"] is not None:
                    reductions.append(float(fig["jitter_reduction"]))
                if fig["step_lag_ms"] is not None:
                    lags.append(float(fig["step_lag_ms"]))
        clips.append({"video": str(video), "tracks": tracks})
    worst_reduction = min(reductions) if reductions else None
    worst_lag = max(lags) if lags else None
    result = {
        "bench": "smoothing",
        "smoothing": cfg.smoothing.model_dump(),
        "clips": clips,
        "min_jitter_reduction": worst_reduction,
        "max_step_lag_ms": worst_lag,
        "target": {
            "jitter_reduction_min": TARGET_JITTER_REDUCTION,
            "step_lag_ms_max": TARGET_STEP_LAG_MS,
        },
        "meets_target": worst_reduction is not None
        and worst_reduction >= TARGET_JITTER_REDUCTION
        and (worst_lag is None or worst_lag <= TARGET_STEP_LAG_MS),
    }
    return emit(result)
