"""``streamer bench replay VIDEO``: throughput of the replay pipeline, as JSON.

Reports frames, faces, wall seconds, fps, real-time factor, ms per stage per frame
(decode runs in its own thread, overlapped with the rest), peak RSS, and the decode-only
fps of the same file measured in the same run (the ceiling any analysis can reach).

``--episode-load RULES TRACKS`` adds the cost of the episodes stage under a synthetic
load (:mod:`streamer.bench.episode_load`); ``--annotate`` adds replay fps without and
with the annotated video (the second pass that draws and re-encodes), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from streamer.annotate import AnnotationRecorder, write_annotated
from streamer.bench.harness import decode_only, emit, measure_replay
from streamer.config import AppConfig, load_config, with_analysis_fps
from streamer.runtime.replay import BusReader, run_replay
from streamer.smoothing import kalman_filter_class
from streamer.sources.file import decode_count


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
    p.add_argument(
        "--analysis-fps",
        type=float,
        metavar="N",
        help="analyse N frames per second of media time (analysis.fps); adds `skip_frame`: "
        "decode-only and replay CPU with and without non-reference pictures left undecoded",
    )
    p.set_defaults(func=cmd_bench_replay)


async def _replay_once(cfg: AppConfig, path: Path, annotate_to: Path | None) -> dict[str, float]:
    """One replay, with the annotated video written after it when ``annotate_to``."""
    recorder = AnnotationRecorder() if annotate_to else None
    readers = [BusReader("annotate", recorder.consume, recorder.accept)] if recorder else []
    result = await run_replay(cfg, path, readers=readers)
    t_annotate = 0.0
    if recorder is not None and annotate_to is not None:
        t1 = time.perf_counter()
        await asyncio.to_thread(write_annotated, path, annotate_to, recorder.overlays)
        t_annotate = time.perf_counter() - t1
    return {
        "frames": result.stats.frames,
        "replay_s": result.wall_s,
        "annotate_s": t_annotate,
        "fps": result.stats.frames / (result.wall_s + t_annotate),
    }


async def annotate_figures(cfg: AppConfig, path: Path, repeat: int) -> dict[str, Any]:
    """Best-of-``repeat`` replay fps without and with ``--annotate`` (alternating runs)."""
    without: list[dict[str, float]] = []
    with_: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp:
        out = Path(tmp) / "annotated.mp4"
        for _ in range(max(1, repeat)):
            without.append(await _replay_once(cfg, path, None))
            with_.append(await _replay_once(cfg, path, out))
    best_without = max(without, key=lambda r: r["fps"])
    best_with = max(with_, key=lambda r: r["fps"])
    return {
        "fps_without_annotate": round(best_without["fps"], 1),
        "fps_with_annotate": round(best_with["fps"], 1),
        "annotate_pass_fps": round(best_with["frames"] / max(best_with["annotate_s"], 1e-9), 1),
        "ratio_with_over_without": round(best_with["fps"] / best_without["fps"], 3),
    }


def skip_frame_figures(cfg: AppConfig, path: Path, repeat: int) -> dict[str, Any]:
    """What leaving non-reference pictures off the grid undecoded saves: process CPU ms
    per frame of the file, decoding alone and whole replays, with and without, in
    alternating runs (the median of each side; the machine's load hits both alike)."""
    fps = cfg.analysis.fps
    dec: dict[bool, list[float]] = {True: [], False: []}
    rep: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(max(1, repeat)):
        for skip in (True, False):
            dec[skip].append(round(decode_only(path, fps, skip)[2], 3))
            rep[skip].append(
                float(asyncio.run(measure_replay(cfg, path, skip_nonref=skip))["cpu_ms_per_frame"])
            )
    med = {k: statistics.median(v) for k, v in dec.items()}
    rmed = {k: statistics.median(v) for k, v in rep.items()}
    return {
        "not_decoded_share": round(_not_decoded_share(path, fps), 4),
        "decode_only_cpu_ms_per_frame": {
            "skip": round(med[True], 3),
            "decode_all": round(med[False], 3),
        },
        "decode_only_cpu_ratio": round(med[True] / max(med[False], 1e-9), 3),
        "replay_cpu_ms_per_frame": {
            "skip": round(rmed[True], 3),
            "decode_all": round(rmed[False], 3),
        },
        "replay_cpu_ratio": round(rmed[True] / max(rmed[False], 1e-9), 3),
        "runs": {
            "decode_only": {"skip": dec[True], "decode_all": dec[False]},
            "replay": {"skip": rep[True], "decode_all": rep[False]},
        },
    }


def _not_decoded_share(path: Path, fps: float | None) -> float:
    """Share of the file's frames a replay at ``fps`` leaves undecoded."""
    _, state = decode_count(path, fps)
    return state.not_decoded / max(1, state.next_index)


def cmd_bench_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else AppConfig()
    if args.analysis_fps is not None:
        cfg = with_analysis_fps(cfg, args.analysis_fps)
    _, dec_fps, _ = decode_only(args.video)  # also warms the file cache
    kalman_filter_class()  # filterpy's one-time import (about 1 s) is start-up, not fps
    runs = [asyncio.run(measure_replay(cfg, args.video)) for _ in range(max(1, args.repeat))]
    best = max(runs, key=lambda r: cast(float, r["fps"]))
    _, dec_fps2, _ = decode_only(args.video)
    result = {
        "bench": "replay",
        "video": str(args.video),
        **best,
        "fps_all_runs": [r["fps"] for r in runs],
        "decode_only_fps": round(max(dec_fps, dec_fps2), 1),
        "analysis_fps": cfg.analysis.fps,
        "detect_every_n_frames": cfg.faces.detector.detect_every_n_frames,
        "detect_width_px": cfg.faces.detector.detect_width_px,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.episode_load:
        from streamer.bench.episode_load import stage_load

        rules, tracks = args.episode_load
        frames, video_fps = int(str(best["frames"])), float(str(best["video_fps"]))
        load = stage_load(rules, tracks, frames, video_fps)
        frame_ms = 1000.0 * float(str(best["wall_s"])) / frames
        load["frame_ms"] = round(frame_ms, 3)
        load["percent_of_frame"] = round(100.0 * load["added_ms_per_frame"] / frame_ms, 3)
        result["episodes_stage"] = load
    if args.annotate:
        result["annotate"] = asyncio.run(annotate_figures(cfg, args.video, args.repeat))
    if cfg.analysis.fps is not None:
        result["skip_frame"] = skip_frame_figures(cfg, args.video, args.repeat)
    return emit(result)
