"""``streamer bench replay VIDEO``: throughput of the replay pipeline, as JSON.

Reports frames, faces, wall seconds, fps, real-time factor, ms per stage per frame
(decode runs in its own thread, overlapped with the rest), peak RSS, and the decode-only
fps of the same file measured in the same run (the ceiling any analysis can reach).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from streamer.compose import Composition, SinkOptions, build_pipeline
from streamer.config import AppConfig, load_config
from streamer.smoothing import kalman_filter_class
from streamer.sources.file import FileSource, count_frames
from streamer.store import default_store

if TYPE_CHECKING:
    from streamer.affect.models import VAModel


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay throughput and per-stage cost of a video file")
    p.add_argument("video", type=Path)
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--repeat", type=int, default=3, help="pipeline runs; the best is reported")
    p.add_argument(
        "--episode-load",
        nargs=2,
        type=int,
        metavar=("RULES", "TRACKS"),
        help="also measure the episodes stage with this many rules and tracks per frame",
    )
    p.add_argument(
        "--annotate", action="store_true", help="also fps without and with --annotate (one run)"
    )
    p.set_defaults(func=cmd_bench_replay)


def decode_only(path: Path) -> tuple[int, float, float]:
    """Frames, fps and process CPU ms per frame of decoding ``path`` alone (the decoding
    core, BGR)."""
    c0, t0 = process_cpu_s(), time.perf_counter()
    n = count_frames(path)
    wall, cpu = time.perf_counter() - t0, process_cpu_s() - c0
    return n, n / wall, 1000.0 * cpu / max(1, n)


def process_cpu_s() -> float:
    """CPU seconds of this process so far (every thread, user and system)."""
    t = os.times()
    return t.user + t.system


async def _run_once(cfg: AppConfig, path: Path, model: VAModel | None = None) -> dict[str, object]:
    """One replay of ``path`` through the pipeline of ``cfg`` (``model``: instead of the
    configured VA network), measured."""
    store = default_store()
    source = FileSource(path)
    async with source:
        pipe = build_pipeline(cfg, store, model=model)
        t0, c0 = time.perf_counter(), process_cpu_s()
        async with Composition(pipe, SinkOptions(replay=True)) as run:
            stats = await pipe.run_camera(
                source.camera, source, lossless=True, decode_stats=source.counters
            )
        wall, cpu = time.perf_counter() - t0, process_cpu_s() - c0
    fps = stats.frames / wall
    by_stage = stats.stage_ms_per_frame()
    episodes = run.sinks.get("episodes")  # with `episodes:` / `mood:` configured
    if episodes is not None and stats.frames:
        by_stage["episodes"] = round(1000.0 * sum(episodes.busy_s.values()) / stats.frames, 3)
    return {
        "model": pipe.model_name,
        "frames": stats.frames,
        "faces": stats.faces,
        "faces_per_frame": round(stats.faces / max(1, stats.frames), 3),
        "detector_runs": stats.detector_runs,
        "wall_s": round(wall, 4),
        "fps": round(fps, 1),
        "video_fps": round(source.fps, 3),
        "realtime_factor": round(fps / source.fps, 2) if source.fps else None,
        "cpu_ms_per_frame": round(1000.0 * cpu / max(1, stats.frames), 2),
        "ms_per_frame_by_stage": by_stage,
        "damage": source.report.as_dict(),
    }


def cmd_bench_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else AppConfig()
    _, dec_fps, _ = decode_only(args.video)  # also warms the file cache
    kalman_filter_class()  # filterpy's one-time import (about 1 s) is start-up, not fps
    runs = [asyncio.run(_run_once(cfg, args.video)) for _ in range(max(1, args.repeat))]
    best = max(runs, key=lambda r: cast(float, r["fps"]))
    _, dec_fps2, _ = decode_only(args.video)
    result = {
        "bench": "replay",
        "video": str(args.video),
        **best,
        "fps_all_runs": [r["fps"] for r in runs],
        "decode_only_fps": round(max(dec_fps, dec_fps2), 1),
        "detect_every_n_frames": cfg.faces.detector.detect_every_n_frames,
        "detect_width_px": cfg.faces.detector.detect_width_px,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.episode_load:
        from streamer.episodes.load import stage_load

        rules, tracks = args.episode_load
        frames, video_fps = int(str(best["frames"])), float(str(best["video_fps"]))
        load = stage_load(rules, tracks, frames, video_fps)
        frame_ms = 1000.0 * float(str(best["wall_s"])) / frames
        load["frame_ms"] = round(frame_ms, 3)
        load["percent_of_frame"] = round(100.0 * load["added_ms_per_frame"] / frame_ms, 3)
        result["episodes_stage"] = load
    if getattr(args, "annotate", False):
        from streamer.cli.bench_web import annotate_figures

        result["annotate"] = asyncio.run(annotate_figures(cfg, args.video, args.repeat))
    print(json.dumps(result, indent=2))
    return 0
