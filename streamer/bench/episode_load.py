"""A synthetic load for the episodes stage: many rules, many tracks
(``bench replay --episode-load``).

Every frame carries ``tracks`` smoothed VA samples whose trajectories wander through all
four quadrants, so rules start and end all the time; the stage runs on a real
:class:`EventBus`, as in the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from typing import Any

from streamer.bus import EventBus
from streamer.episodes.config import EpisodesConfig, MoodConfig
from streamer.episodes.stage import EpisodeStage
from streamer.messages import TrackEvent, TrackEventKind, VASample

_THRESHOLDS = ("valence_below", "valence_above", "arousal_below", "arousal_above")


def synthetic_rules(n: int) -> EpisodesConfig:
    """``n`` rules over all four thresholds, single and combined, various durations."""
    rules = []
    for i in range(n):
        key = _THRESHOLDS[i % 4]
        level = 0.2 + 0.1 * (i % 5)
        when: dict[str, float] = {key: -level if key.endswith("below") else level}
        if i % 3 == 2:
            other = _THRESHOLDS[(i + 1) % 4]
            if other.split("_")[0] != key.split("_")[0]:
                when[other] = -0.9 if other.endswith("above") else 0.9
        rules.append(
            {"name": f"rule{i}", "when": when, "for_s": 0.5 + 0.5 * (i % 4), "clear_after_s": 0.5}
        )
    return EpisodesConfig.model_validate({"rules": rules})


def _samples(frame: int, t: float, tracks: int, rng: random.Random) -> list[VASample]:
    out = []
    for k in range(tracks):
        v = 0.8 * math.sin(0.7 * t + k) + rng.gauss(0.0, 0.03)
        a = 0.8 * math.cos(0.45 * t + 2 * k) + rng.gauss(0.0, 0.03)
        out.append(
            VASample("load", frame, t, k + 1, (0, 0, 1, 1), v, a, v, a, (0.01, 0.01), "synthetic")
        )
    return out


async def _run(
    frames: int, fps: float, tracks: int, stage_cfg: tuple[Any, Any] | None
) -> tuple[float, float, int]:
    """(wall seconds, seconds inside the stage, messages the stage published)."""
    bus = EventBus()
    rng = random.Random(0)
    batches = [_samples(i, i / fps, tracks, rng) for i in range(frames)]
    async with contextlib.AsyncExitStack() as stack:
        stage = None
        if stage_cfg is not None:
            stage = await stack.enter_async_context(EpisodeStage(bus, *stage_cfg))
        t0 = time.perf_counter()
        for batch in batches:
            for s in batch:
                await bus.publish(s)
            await asyncio.sleep(0)  # a frame's await point, as in the pipeline
        for k in range(tracks):
            await bus.publish(TrackEvent("load", k + 1, TrackEventKind.LOST, frames, frames / fps))
        if stage is None:
            return time.perf_counter() - t0, 0.0, 0
        await stage.drain()
        return time.perf_counter() - t0, sum(stage.busy_s.values()), stage.published


def stage_load(rules: int, tracks: int, frames: int, fps: float) -> dict[str, Any]:
    """Cost of the stage per frame with ``rules`` rules and ``tracks`` tracks.

    Returns:
        ``stage_ms_per_frame`` (time spent in the stage's rules and mood),
        ``added_ms_per_frame`` (event-loop time the stage adds, bus included: the run
        with the stage minus the same run without it, best of two each), and the
        episodes and moods published.
    """
    cfg = (synthetic_rules(rules), MoodConfig(interval_s=1.0))
    base = min(asyncio.run(_run(frames, fps, tracks, None))[0] for _ in range(2))
    runs = [asyncio.run(_run(frames, fps, tracks, cfg)) for _ in range(2)]
    wall, busy, published = min(runs)
    return {
        "rules": rules,
        "tracks": tracks,
        "frames": frames,
        "stage_ms_per_frame": round(busy * 1000.0 / frames, 4),
        "added_ms_per_frame": round(max(0.0, wall - base) * 1000.0 / frames, 4),
        "published": published,
    }
