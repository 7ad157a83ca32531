"""``streamer bench cameras``: the most live cameras this machine analyses in time, as JSON.

Serves a 1280x720, 15 fps clip with one real face (``single_face.mp4`` scaled up) over a
real GStreamer RTSP server on loopback and runs
:func:`~streamer.bench.live_harness.measure_live` with 1, 2, ... N cameras reading it
(the sequence of ``--cameras``). A camera count passes when at least ``--min-analysed``
of the decoded frames were analysed (not replaced in the latest-frame-wins mailbox
because the analysis was busy) and the p95 latency from a frame's decoding to its VA
result is under ``--max-p95-ms``. Reported: every run's figures, the largest passing
count, and the machine's load average during the runs (other work on the machine lowers
the count).

gst-rtsp-server can stall a shared media that several clients set up at once (the
sources are staggered to avoid it, and it still happens now and then): a run whose
sources stalled and decoded less than half the frames served met a stalled test server,
not a slow analyzer. It is kept in ``runs`` with ``void`` saying so, and the count is
measured again on a fresh server. A shortfall without stalls (decoding could not keep
up) is a result, never retried.

``--analysis-fps N`` analyses every camera at N frames per second of media time: the
share is then of the frames due (the frames off the grid are ``skipped_by_rate``, not
losses). ``--no-face K`` points K of the cameras at a second server playing
``no_face.mp4`` (720p15, no face, moving pictures). Every count also reports the process
CPU in the window (cores, and ms per camera-second), RSS, and RSS per camera: what its
cameras added to the RSS measured before they started (the models loaded), and between
counts, the slope.

``--empty-room`` measures what a camera watching an empty room costs against decoding
alone: ``--empty-room-cameras`` cameras watch a still scene without a face (the first
frame of ``no_face.mp4`` with sensor noise), once analysed and once only decoded, in
alternating runs (``--repeat`` pairs); the median of the pairs' CPU ratios is reported.
``--paired`` (with ``--analysis-fps``) measures each count at every frame too, just
before the run at the rate: on a shared machine the pair compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from streamer.bench.harness import emit, resolve_media
from streamer.bench.live_harness import measure_live
from streamer.config import AppConfig, load_config, with_analysis_fps
from streamer.errors import ConfigError, MediaError
from streamer.testing.sources import gst_rtsp_unavailable

CAMERA_SIZE = (1280, 720)
CAMERA_FPS = 15
DEFAULT_COUNTS = (1, 2, 4, 6, 8, 10, 12, 16)
SERVED_SHARE = 0.5  # below this share of the frames served, with stalls: the server stalled


def frames_sent(run: dict[str, Any]) -> float:
    """Frames the cameras of ``run`` (a :func:`measure_live` result) sent in its window."""
    return float(run["cameras"] * CAMERA_FPS * run["duration_s"])


def server_stalled(run: dict[str, Any]) -> str | None:
    """Why ``run`` (a :func:`measure_live` result) met a stalled test server, or None."""
    served = frames_sent(run)
    if run["stalls"] and run["frames_decoded"] < SERVED_SHARE * served:
        return (
            f"the RTSP test server delivered {run['frames_decoded']} of about {served:.0f} "
            f"frames and the sources stalled {run['stalls']} times: its shared media stalled"
        )
    return None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("cameras", help="largest number of 720p RTSP cameras analysed in time")
    p.add_argument(
        "--cameras",
        type=int,
        action="append",
        help=f"camera counts to try, in order (default {' '.join(map(str, DEFAULT_COUNTS))})",
    )
    p.add_argument("--duration-s", type=float, default=20.0, help="measured seconds per count")
    p.add_argument("--warmup-s", type=float, default=4.0, help="excluded seconds per count")
    p.add_argument("--min-analysed", type=float, default=0.95, help="share of frames analysed")
    p.add_argument("--max-p95-ms", type=float, default=100.0, help="p95 latency limit, ms")
    p.add_argument("--keep-going", action="store_true", help="try every count even after one fails")
    p.add_argument("--config", type=Path, help="YAML config (its cameras are ignored)")
    p.add_argument(
        "--analysis-fps", type=float, metavar="N", help="analysis rate of every camera (fps)"
    )
    p.add_argument(
        "--no-face",
        type=int,
        default=0,
        metavar="K",
        help="K of each count's cameras watch no_face.mp4 (no face) instead",
    )
    p.add_argument(
        "--empty-room",
        action="store_true",
        help="instead of the counts: CPU of cameras watching an empty room, analysed "
        "against decoded only",
    )
    p.add_argument("--empty-room-cameras", type=int, default=4, help="cameras of --empty-room")
    p.add_argument("--hwaccel", help="the cameras' hardware decoder (cuda: NVDEC); CPU fallback")
    p.add_argument(
        "--paired",
        action="store_true",
        help="with --analysis-fps: measure each count at every frame too, just before "
        "(`every_frame`, `cpu_ratio_to_every_frame`: comparable on a loaded machine)",
    )
    p.add_argument("--repeat", type=int, default=3, help="pairs of --empty-room runs")
    p.set_defaults(func=cmd_bench_cameras)


def camera_clip(src: Path, dest: Path, seconds: float = 10.0, still: bool = False) -> Path:
    """``src`` scaled to 1280x720 at 15 fps (H.264, looped to ``seconds``); ``still``:
    its first frame held, with sensor noise (an empty room)."""
    with av.open(str(src)) as inp:
        rate = float(inp.streams.video[0].average_rate or CAMERA_FPS)
        images = [f.to_ndarray(format="bgr24") for f in inp.decode(video=0)]
    if not images:
        raise MediaError(f"{src}: no video frame")
    images = images[:: max(1, round(rate / CAMERA_FPS))]
    if still:
        rng = np.random.default_rng(0)
        first = images[0].astype(np.int16)
        images = [
            np.asarray(np.clip(first + rng.integers(-3, 4, first.shape), 0, 255), np.uint8)
            for _ in range(CAMERA_FPS)
        ]
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=CAMERA_FPS)
        stream.width, stream.height = CAMERA_SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20", "g": str(CAMERA_FPS)}
        for k in range(round(seconds * CAMERA_FPS)):
            img = images[k % len(images)]
            big = np.asarray(cv2.resize(img, CAMERA_SIZE, interpolation=cv2.INTER_LINEAR), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest


def verdict(run: dict[str, Any], min_analysed: float, max_p95_ms: float) -> dict[str, Any]:
    """The pass/fail figures of one :func:`measure_live` result."""
    decoded = int(run["frames_decoded"])
    due = decoded - int(run.get("frames_skipped_by_rate", 0))  # on the analysis grid
    analysed = (due - int(run["frames_skipped"])) / due if due else 0.0
    p95 = run["latency_ms"]["p95"]
    rss = run.get("rss_mb") or {}
    end, before = rss.get("end"), rss.get("before_sources")
    added = end - before if end is not None and before is not None else None
    return {
        "cameras": run["cameras"],
        "no_face_cameras": run.get("others", 0),
        # Of the frames due (all, without an analysis rate): analysed in time.
        "analysed_share": round(analysed, 4),
        "p95_ms": p95,
        "p50_ms": run["latency_ms"]["p50"],
        "frames_decoded": decoded,
        "frames_skipped_by_rate": decoded - due,
        "frames_not_decoded": run.get("frames_not_decoded", 0),
        # Of the frames the cameras sent in the window: below 1, decoding fell behind.
        "decoded_share": round(decoded / frames_sent(run), 4),
        "stalls": run["stalls"],
        "reconnects": run["reconnects"],
        "detector_runs": run["detector_runs"],
        "detections_deferred": run["detections_deferred"],
        "detections_idle_skipped": run.get("detections_idle_skipped", 0),
        "hwaccel_fell_back": run.get("hwaccel_fell_back", 0),
        "cpu": run.get("cpu"),
        "rss_mb": end,
        "rss_added_mb": None if added is None else round(added, 1),
        "rss_per_camera_mb": None if added is None else round(added / run["cameras"], 2),
        "pass": analysed >= min_analysed and p95 is not None and p95 < max_p95_ms,
        "ms_per_frame_by_stage": run["ms_per_frame_by_stage"],
    }


def rss_slopes(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RSS per added camera between consecutive counts (one process: memory freed by a
    count's cameras may be reused by the next, so the slope is a lower bound)."""
    valid = [r for r in runs if r.get("pass") is not None and r["rss_mb"] is not None]
    return [
        {
            "from": a["cameras"],
            "to": b["cameras"],
            "mb_per_camera": round((b["rss_mb"] - a["rss_mb"]) / (b["cameras"] - a["cameras"]), 2),
        }
        for a, b in itertools.pairwise(valid)
        if b["cameras"] != a["cameras"]
    ]


def empty_room(
    cfg: AppConfig, tmp: Path, cameras: int, duration_s: float, warmup_s: float, repeat: int
) -> dict[str, Any]:
    """CPU of ``cameras`` cameras watching an empty room, analysed against decoded only
    (alternating runs, paired; see the module docstring)."""
    clip = camera_clip(resolve_media("no_face.mp4"), tmp / "empty720p15.mp4", still=True)
    pairs = []
    for _ in range(max(1, repeat)):
        only = asyncio.run(measure_live(cfg, clip, duration_s, warmup_s, cameras, decode_only=True))
        analysed = asyncio.run(measure_live(cfg, clip, duration_s, warmup_s, cameras))
        pairs.append((only, analysed))
    ratios = [
        a["cpu"]["ms_per_camera_s"] / max(d["cpu"]["ms_per_camera_s"], 1e-9) for d, a in pairs
    ]
    return {
        "cameras": cameras,
        "scene": "no_face.mp4's first frame held still, sensor noise (+-3 grey levels), 720p15",
        "analysis_fps": cfg.analysis.fps,
        "idle_detect_every_s": cfg.faces.detector.idle_detect_every_s,
        "cpu_ms_per_camera_s": {
            "decode_only": [d["cpu"]["ms_per_camera_s"] for d, _ in pairs],
            "analysed": [a["cpu"]["ms_per_camera_s"] for _, a in pairs],
        },
        "detector_runs": [a["detector_runs"] for _, a in pairs],
        "detections_idle_skipped": [a["detections_idle_skipped"] for _, a in pairs],
        "ratio_pairs": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def cmd_bench_cameras(args: argparse.Namespace) -> int:
    counts = args.cameras or list(DEFAULT_COUNTS)
    if any(not 1 <= n <= 64 for n in counts) or args.duration_s <= 0:
        raise ConfigError("--cameras must be in 1..64 and --duration-s > 0")
    reason = gst_rtsp_unavailable()
    if reason:
        raise MediaError(f"bench cameras needs the GStreamer RTSP server: {reason}")
    cfg = load_config(args.config) if args.config else AppConfig()
    every_frame = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"fps": None})})
    if args.analysis_fps is not None:
        cfg = with_analysis_fps(cfg, args.analysis_fps)
    if args.empty_room:
        with tempfile.TemporaryDirectory(prefix="streamer-cameras-") as tmp:
            figures = empty_room(
                cfg,
                Path(tmp),
                args.empty_room_cameras,
                args.duration_s,
                args.warmup_s,
                args.repeat,
            )
        return emit({"bench": "cameras", "empty_room": figures, "cpus": os.cpu_count()})
    runs: list[dict[str, Any]] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="streamer-cameras-") as tmp:
        clip = camera_clip(resolve_media("single_face.mp4"), Path(tmp) / "cam720p15.mp4")
        no_face = None
        if args.no_face:
            no_face = camera_clip(resolve_media("no_face.mp4"), Path(tmp) / "noface720p15.mp4")

        def measure(n: int, at: AppConfig = cfg) -> dict[str, Any]:
            others = min(args.no_face, n)
            return asyncio.run(
                measure_live(
                    at,
                    clip,
                    args.duration_s,
                    args.warmup_s,
                    n,
                    other_clip=no_face,
                    others=others,
                    hwaccel=args.hwaccel,
                )
            )

        for n in counts:
            every = None
            if args.paired and cfg.analysis.fps is not None:
                every = verdict(measure(n, every_frame), args.min_analysed, args.max_p95_ms)
            result = measure(n)
            void = server_stalled(result)
            if void is not None:  # kept for the record, then measured again
                runs.append(
                    {
                        **verdict(result, args.min_analysed, args.max_p95_ms),
                        "pass": None,
                        "void": void,
                    }
                )
                result = measure(n)
            loads.append(os.getloadavg()[0])
            runs.append(verdict(result, args.min_analysed, args.max_p95_ms))
            if every is not None:
                runs[-1]["every_frame"] = every
                runs[-1]["cpu_ratio_to_every_frame"] = round(
                    runs[-1]["cpu"]["cores"] / max(every["cpu"]["cores"], 1e-9), 3
                )
            if not runs[-1]["pass"] and not args.keep_going:
                break
    passing = [r["cameras"] for r in runs if r["pass"]]
    return emit(
        {
            "bench": "cameras",
            "camera": f"{CAMERA_SIZE[0]}x{CAMERA_SIZE[1]} at {CAMERA_FPS} fps, one face",
            "no_face_cameras": args.no_face,
            "analysis_fps": cfg.analysis.fps,
            "hwaccel": args.hwaccel,
            "hwaccel_fell_back": sum(r.get("hwaccel_fell_back", 0) for r in runs),
            "limits": {"min_analysed": args.min_analysed, "max_p95_ms": args.max_p95_ms},
            "cpus": os.cpu_count(),
            "largest_passing": max(passing) if passing else 0,
            "load_average_1m": [round(x, 2) for x in loads],
            "rss_per_added_camera": rss_slopes(runs),
            "runs": runs,
        }
    )
