"""What every bench shares: timing, process CPU and memory, media lookup, decode-only
runs, paired ratios, measured replays and the JSON output.

A bench measures; it never asserts a time. Figures that depend on the machine's load
are taken in pairs within one run (a pipeline run against the decode-only run just
before it) and reported with their median, so a load change on a shared machine hits
both sides of a ratio alike.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.config import AppConfig
from streamer.episodes.stage import EpisodeStage
from streamer.runtime.replay import ReplayOptions, ReplayResult, process_cpu_s, run_replay
from streamer.sources.file import decode_count

if TYPE_CHECKING:
    from streamer.affect.models import VAModel

__all__ = [
    "decode_only",
    "emit",
    "measure_replay",
    "paired_ratios",
    "percentiles_ms",
    "process_cpu_s",
    "resolve_media",
    "rss_mb",
]


def emit(result: dict[str, Any]) -> int:
    """Print a bench's JSON result on stdout; returns the exit code (0)."""
    print(json.dumps(result, indent=2))
    return 0


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentiles_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p95, p99 and max of ``values`` (seconds) in milliseconds."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(values) * 1000.0
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": len(values),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(arr.max()), 2),
    }


def resolve_media(name: str) -> Path:
    """A path, or the name of a media file in the model store."""
    path = Path(name)
    if path.is_file():
        return path
    from streamer.store import default_store

    return default_store().path(name)


def decode_only(
    path: Path, analysis_fps: float | None = None, skip_nonref: bool = True
) -> tuple[int, float, float]:
    """Frames, fps and process CPU ms per frame of decoding ``path`` alone (the decoding
    core, BGR): the ceiling any analysis of the file can reach.

    With ``analysis_fps``, the frames on the grid are converted to BGR, the others only
    decoded (or, ``skip_nonref``, not even that where they are non-reference pictures),
    as the replay at that rate does; fps and CPU are then per frame of the file."""
    c0, t0 = process_cpu_s(), time.perf_counter()
    handed, state = decode_count(path, analysis_fps, skip_nonref)
    frames = handed + state.skipped_by_rate
    wall, cpu = time.perf_counter() - t0, process_cpu_s() - c0
    return frames, frames / wall, 1000.0 * cpu / max(1, frames)


def paired_ratios(runs: Sequence[float], decodes: Sequence[float]) -> dict[str, Any]:
    """The best of ``runs`` (fps) against the best decode-only fps, and each run against
    the decode-only run just before it (``decodes`` has one more than ``runs``)."""
    pairs = [r / d for r, d in zip(runs, decodes, strict=False)]
    return {
        "fps_to_decode_only": round(max(runs) / max(decodes), 3),
        "fps_to_decode_only_pairs": [round(x, 3) for x in pairs],
        "fps_to_decode_only_pairs_median": round(statistics.median(pairs), 3),
    }


def replay_figures(result: ReplayResult) -> dict[str, Any]:
    """The figures of one measured replay (``bench replay`` and ``bench crowd``)."""
    stats = result.stats
    # Frames of the video per second: with an analysis rate, the frames skipped by rate
    # went through the decoder too (every frame is analysed otherwise).
    video_frames = stats.frames + stats.skipped_by_rate
    fps = video_frames / result.run_s
    by_stage = stats.stage_ms_per_frame()
    episodes = result.sinks.get("episodes")  # with `episodes:` / `mood:` configured
    if isinstance(episodes, EpisodeStage) and stats.frames:
        by_stage["episodes"] = round(1000.0 * sum(episodes.busy_s.values()) / stats.frames, 3)
    return {
        "model": result.model,
        "frames": stats.frames,
        "skipped_by_rate": stats.skipped_by_rate,
        "faces": stats.faces,
        "faces_per_frame": round(stats.faces / max(1, stats.frames), 3),
        "detector_runs": stats.detector_runs,
        "detections_idle_skipped": stats.detections_idle_skipped,
        "wall_s": round(result.run_s, 4),
        "fps": round(fps, 1),
        "analysed_fps": round(stats.frames / result.run_s, 1),
        "video_fps": round(result.video_fps, 3),
        "realtime_factor": round(fps / result.video_fps, 2) if result.video_fps else None,
        "cpu_ms_per_frame": round(1000.0 * result.run_cpu_s / max(1, video_frames), 2),
        "ms_per_frame_by_stage": by_stage,
        "damage": result.report.as_dict(),
    }


async def measure_replay(
    cfg: AppConfig, path: Path, model: VAModel | None = None, skip_nonref: bool = True
) -> dict[str, Any]:
    """One replay of ``path`` through the pipeline of ``cfg`` (``model``: instead of the
    configured VA network; ``skip_nonref``: see :class:`~streamer.runtime.replay.ReplayOptions`),
    measured from the models loaded to the end."""
    options = ReplayOptions(skip_nonref=skip_nonref)
    return replay_figures(await run_replay(cfg, path, options, model=model))
