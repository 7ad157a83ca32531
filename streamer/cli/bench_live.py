"""``streamer bench live``: latency of the live pipeline on a real clip served over RTSP.

A real GStreamer RTSP server on loopback serves the clip (looped by remuxing, no
re-encode) at its native frame rate; one :class:`~streamer.sources.live.LiveSource`
reads it over TCP and the shared pipeline analyses it. Reported as JSON:

* ``latency_ms``: from a frame's arrival (decoded by the source, before the mailbox) to
  its VA result on the bus, per VA sample: p50, p95, p99, max;
* ``frames_skipped``: frames the latest-frame-wins mailbox replaced because the
  analysis was busy;
* ``rss_mb``: resident memory after warm-up and at the end (plus samples over the run).

Needs Debian's ``/usr/bin/python3`` with ``python3-gi`` and gst-rtsp-server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import AppConfig, load_config
from streamer.errors import ConfigError, MediaError
from streamer.messages import Frame, VASample
from streamer.pipeline import Pipeline
from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource
from streamer.testing.sources import RtspServer, gst_rtsp_unavailable, loop_clip

logger = logging.getLogger(__name__)

CAMERA = "bench"
ARRIVALS_KEPT = 4096  # frame arrival times remembered for latency matching
RSS_SAMPLE_S = 5.0  # seconds between RSS samples
BENCH_STAGGER_S = 0.2  # seconds between starting the sources of a multi-camera bench


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "live",
        help="latency frame -> VA of a real clip served over RTSP at its native rate",
    )
    p.add_argument(
        "--clip",
        default="single_face.mp4",
        help="H.264 MP4 to serve: a path or a media name in the model store "
        "(default: single_face.mp4)",
    )
    p.add_argument("--duration-s", type=float, default=120.0, help="measured run (default 120)")
    p.add_argument(
        "--warmup-s", type=float, default=3.0, help="excluded from latency and RSS start"
    )
    p.add_argument(
        "--cameras", type=int, default=1, help="sources reading the stream at once (default 1)"
    )
    p.add_argument("--config", type=Path, help="YAML config (its cameras are ignored)")
    p.set_defaults(func=cmd_bench_live)


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


def percentiles_ms(values: list[float]) -> dict[str, float | int | None]:
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


def resolve_clip(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    from streamer.store import default_store

    return default_store().path(name)


async def bench_live(
    cfg: AppConfig, clip: Path, duration_s: float, warmup_s: float, cameras: int = 1
) -> dict[str, Any]:
    """Serve ``clip`` over RTSP to ``cameras`` sources, analyse them live and measure."""
    from streamer.store import default_store

    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp:
        served = loop_clip(clip, Path(tmp) / "served.mp4", duration_s + warmup_s + 30.0)
        with RtspServer(served) as server:
            cams = [
                CameraConfig(name=f"{CAMERA}{i}" if cameras > 1 else CAMERA, url=server.url)
                for i in range(cameras)
            ]
            cfg = cfg.model_copy(update={"cameras": cams})
            pipe = Pipeline(cfg, default_store())
            sub = pipe.bus.subscribe(
                "bench", maxsize=100_000, accept=lambda m: isinstance(m, VASample)
            )
            arrivals: dict[str, collections.OrderedDict[int, float]] = {
                c.name: collections.OrderedDict() for c in cams
            }
            latencies: list[float] = []
            rss_samples: list[tuple[float, float]] = []
            measuring = asyncio.Event()
            async with pipe:
                sources = [LiveSource(c, pipe.bus) for c in cams]

                async def frames(source: LiveSource) -> AsyncIterator[Frame]:
                    seen = arrivals[source.name]
                    async for frame in source:
                        seen[frame.index] = frame.wall_time
                        while len(seen) > ARRIVALS_KEPT:
                            seen.popitem(last=False)
                        yield frame

                async def collect() -> None:
                    async for msg in sub:
                        assert isinstance(msg, VASample)
                        arrived = arrivals[msg.camera].get(msg.frame)
                        if measuring.is_set() and arrived and msg.wall_time:
                            latencies.append(msg.wall_time - arrived)

                async def sample_rss(t0: float) -> None:
                    while True:
                        rss_samples.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))
                        await asyncio.sleep(RSS_SAMPLE_S)

                for source in sources:
                    source.start()
                    # gst-rtsp-server can wedge a shared media that many clients set up
                    # in the same instant; real cameras are not opened in lockstep either.
                    await asyncio.sleep(BENCH_STAGGER_S)
                try:
                    runs = [
                        asyncio.create_task(
                            pipe.run_camera(src.name, frames(src), lossless=False),
                            name=f"bench-{src.name}",
                        )
                        for src in sources
                    ]
                    collector = asyncio.create_task(collect(), name="bench-collect")
                    await asyncio.sleep(warmup_s)
                    start_stats = [src.stats() for src in sources]
                    measuring.set()
                    t0 = time.monotonic()
                    sampler = asyncio.create_task(sample_rss(t0), name="bench-rss")
                    await asyncio.sleep(duration_s)
                    sampler.cancel()
                    rss_samples.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))
                    end_stats = [src.stats() for src in sources]
                    wall = time.monotonic() - t0
                finally:
                    await asyncio.gather(*(src.aclose() for src in sources))
                await asyncio.gather(*runs)
            await collector
    decoded = sum(e.frames - s.frames for s, e in zip(start_stats, end_stats, strict=True))
    skipped = sum(e.skipped - s.skipped for s, e in zip(start_stats, end_stats, strict=True))
    rss_values = [r for _, r in rss_samples]
    first = pipe.stats[cams[0].name]
    return {
        "bench": "live",
        "clip": clip.name,
        "transport": "rtsp/tcp (GStreamer server on loopback)",
        "model": pipe.model_name,
        "cpus": os.cpu_count(),
        "cameras": cameras,
        "duration_s": round(wall, 1),
        "camera_fps": round(sources[0].fps or 0.0, 3),
        "frames_decoded": decoded,
        "frames_skipped": skipped,
        "skipped_share": round(skipped / decoded, 4) if decoded else None,
        "frames_analysed_total": sum(pipe.stats[c.name].frames for c in cams),
        "va_samples": len(latencies),
        "latency_ms": percentiles_ms(latencies),
        "rss_mb": {
            "start": rss_values[0] if rss_values else None,
            "end": rss_values[-1] if rss_values else None,
            "max": max(rss_values) if rss_values else None,
            "sample_t_s": [t for t, _ in rss_samples],
            "sample_mb": rss_values,
        },
        "reconnects": sum(e.reconnects for e in end_stats),
        "stalls": sum(e.stalls for e in end_stats),
        "corrupt": sum(e.corrupt for e in end_stats),
        "ms_per_frame_by_stage": first.stage_ms_per_frame(),
    }


def cmd_bench_live(args: argparse.Namespace) -> int:
    if args.duration_s <= 0 or args.warmup_s < 0 or not 1 <= args.cameras <= 64:
        raise ConfigError("--duration-s must be > 0, --warmup-s >= 0, --cameras in 1..64")
    reason = gst_rtsp_unavailable()
    if reason:
        raise MediaError(f"bench live needs the GStreamer RTSP server: {reason}")
    cfg = load_config(args.config) if args.config else AppConfig()
    clip = resolve_clip(args.clip)
    result = asyncio.run(bench_live(cfg, clip, args.duration_s, args.warmup_s, args.cameras))
    print(json.dumps(result, indent=2))
    return 0
