"""``streamer bench crowd``: replay throughput on a crowd, with its faces found, as JSON.

Builds a 1920x1080, 24 fps mosaic of real face clips (:mod:`streamer.testing.mosaic`;
3x3: 9 faces, 5x5: 25 faces), then measures in one run:

* ``decode_only_fps``: decoding the mosaic alone (the ceiling), measured before every
  pipeline run and after the last; the best is reported;
* ``fps``: the replay pipeline with the config given (best of ``--repeat`` runs) and
  ``fps_to_decode_only``, best against best; ``fps_to_decode_only_pairs``: each run
  against the decode-only run just before it (on a shared machine, their median is
  the steadier figure); ``realtime_factor`` against the clip's 24 fps;
* ``cpu_ms_per_frame`` of the pipeline and ``decode_only_cpu_ms_per_frame``: process CPU
  time per frame (every thread), what the analysis adds to decoding on this machine's
  ``cpus`` cores;
* ``faces_per_frame`` of that run against ``reference_faces_per_frame``: the same
  pipeline detecting on every frame at full resolution (``faces_ratio``: how many of the
  faces found that way the configured run still reports);
* ``without_va``: the same pipeline with a VA network that costs nothing (it answers
  (0, 0) for every face; detection, tracking, crops, smoothing and output unchanged),
  run after each measured run and paired, like it, with the decode-only run before
  the two (the measured run always goes first, so on a machine whose load drifts
  compare the pairs' medians, not single pairs). Its ratio to decode-only is the most
  any speed-up of the VA network could bring the pipeline to on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bench.harness import decode_only, emit, measure_replay, paired_ratios
from streamer.config import AppConfig, load_config
from streamer.smoothing import kalman_filter_class
from streamer.store import default_store
from streamer.testing.mosaic import make_mosaic

FULL_RESOLUTION_PX = 4096  # a detection width no frame exceeds: detect at full size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("crowd", help="replay fps and faces found on a 9- or 25-face mosaic")
    p.add_argument("--grid", type=int, default=3, help="tiles per side: 3 (9 faces) or 5 (25)")
    p.add_argument("--frames", type=int, default=240, help="length of the mosaic (default 240)")
    p.add_argument("--video", type=Path, help="use this mosaic instead of building one")
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--repeat", type=int, default=3, help="pipeline runs; the best is reported")
    p.add_argument(
        "--no-reference", action="store_true", help="skip the full-resolution reference run"
    )
    p.set_defaults(func=cmd_bench_crowd)


def reference_config(cfg: AppConfig) -> AppConfig:
    """``cfg`` detecting on every frame at full resolution."""
    det = cfg.faces.detector.model_copy(
        update={"detect_every_n_frames": 1, "detect_width_px": FULL_RESOLUTION_PX}
    )
    faces = cfg.faces.model_copy(update={"detector": det})
    return cfg.model_copy(update={"faces": faces})


class FreeVA:
    """A VA "network" that costs nothing: (0, 0) for every face (the bench's ceiling)."""

    name = "none (bench: VA not computed)"
    approximate = True
    input_size = 64

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.zeros((len(crops), 2), np.float32)


def _per_frame(run: dict[str, Any]) -> float:
    return float(run["faces"]) / max(1, int(run["frames"]))


def _fps(run: dict[str, Any]) -> float:
    return float(run["fps"])


def _to_decode_only(runs: list[dict[str, Any]], decodes: list[float]) -> dict[str, Any]:
    return paired_ratios([_fps(r) for r in runs], decodes)


def crowd_bench(cfg: AppConfig, video: Path, repeat: int, reference: bool) -> dict[str, Any]:
    """Measure ``video`` (see the module docstring); returns the JSON object."""
    kalman_filter_class()  # filterpy's one-time import (about 1 s) is start-up, not fps
    decodes: list[tuple[int, float, float]] = []
    runs: list[dict[str, Any]] = []
    free: list[dict[str, Any]] = []
    for _ in range(max(1, repeat)):
        decodes.append(decode_only(video))
        runs.append(asyncio.run(measure_replay(cfg, video)))
        free.append(asyncio.run(measure_replay(cfg, video, FreeVA())))
    decodes.append(decode_only(video))
    best: dict[str, Any] = max(runs, key=_fps)
    free_best = max(free, key=_fps)
    dec_fps = [d[1] for d in decodes]
    out: dict[str, Any] = {
        **best,
        "fps_all_runs": [r["fps"] for r in runs],
        "decode_only_fps": round(max(dec_fps), 1),
        "decode_only_fps_all_runs": [round(d, 1) for d in dec_fps],
        **_to_decode_only(runs, dec_fps),
        "decode_only_cpu_ms_per_frame": round(min(d[2] for d in decodes), 2),
        "cpus": os.cpu_count(),
        "faces_per_frame": round(_per_frame(best), 3),
        "detect_every_n_frames": cfg.faces.detector.detect_every_n_frames,
        "detect_width_px": cfg.faces.detector.detect_width_px,
        "without_va": {
            "fps": free_best["fps"],
            "fps_all_runs": [r["fps"] for r in free],
            "cpu_ms_per_frame": free_best["cpu_ms_per_frame"],
            "faces_per_frame": round(_per_frame(free_best), 3),
            **_to_decode_only(free, dec_fps),
        },
    }
    if reference:
        ref: dict[str, Any] = asyncio.run(measure_replay(reference_config(cfg), video))
        out["reference_faces_per_frame"] = round(_per_frame(ref), 3)
        out["faces_ratio"] = round(_per_frame(best) / max(_per_frame(ref), 1e-9), 4)
        out["reference_fps"] = ref["fps"]
    return out


def cmd_bench_crowd(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else AppConfig()
    with tempfile.TemporaryDirectory(prefix="streamer-crowd-") as tmp:
        video = args.video
        if video is None:
            video = make_mosaic(
                default_store(), args.grid, Path(tmp) / f"crowd{args.grid**2}.mp4",
                frames=args.frames,
            )  # fmt: skip
        result = crowd_bench(cfg, video, args.repeat, not args.no_reference)
    return emit({"bench": "crowd", "grid": args.grid, **result})
