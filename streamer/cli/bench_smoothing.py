"""``streamer bench smoothing VIDEO ...``: jitter reduction and step lag of the VA filter.

Replays each video with the config's smoothing (or the overrides given) and prints, per
clip and track, the frame-to-frame jitter of the raw and the smoothed valence and arousal
and the lag of the smoothed trajectory on the largest step (see
:mod:`streamer.smoothing_bench` for the definitions), as JSON. The target the defaults
are tuned for: at least 3x less jitter with at most 150 ms lag on a step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from streamer.config import AppConfig, load_config
from streamer.messages import VASample
from streamer.pipeline import Pipeline
from streamer.smoothing_bench import trajectory_figures
from streamer.sources.file import FileSource
from streamer.store import default_store

TARGET_JITTER_REDUCTION = 3.0
TARGET_STEP_LAG_MS = 150.0
MIN_TRACK_SAMPLES = 10


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("smoothing", help="jitter reduction and step lag of the VA smoothing")
    p.add_argument("videos", type=Path, nargs="+", help="video files")
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--process-noise-per-s", type=float, help="override smoothing value")
    p.add_argument("--measurement-noise", type=float, help="override smoothing value")
    p.set_defaults(func=cmd_bench_smoothing)


async def _samples(cfg: AppConfig, path: Path) -> list[VASample]:
    store = default_store()
    got: list[VASample] = []
    async with FileSource(path) as source:
        pipe = Pipeline(cfg, store)
        sub = pipe.bus.subscribe(
            "bench", maxsize=4096, lossless=True, accept=lambda m: isinstance(m, VASample)
        )

        async def collect() -> None:
            async for msg in sub:
                assert isinstance(msg, VASample)
                got.append(msg)

        async with pipe:
            task = asyncio.create_task(collect())
            await pipe.run_camera(source.camera, source, lossless=True)
        await task
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
    print(json.dumps(result, indent=2))
    return 0
