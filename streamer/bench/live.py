"""``streamer bench live``: latency of the live pipeline on a real clip served over RTSP.

The measurement is :func:`streamer.bench.live_harness.measure_live` (its docstring lists
the figures). ``--web`` runs it twice in one run, without the web sink and with it on
plus two browsers reading ``/events`` (plain HTTP clients): latency, process CPU and
analysed fps of both, and their ratios. The dashboard must not slow the video by more
than 10 %.

Needs Debian's ``/usr/bin/python3`` with ``python3-gi`` and gst-rtsp-server.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from streamer.bench.harness import emit, process_cpu_s, resolve_media
from streamer.bench.live_harness import measure_live
from streamer.config import AppConfig, load_config
from streamer.errors import ConfigError, MediaError
from streamer.testing.net import free_port
from streamer.testing.sources import gst_rtsp_unavailable
from streamer.web.config import WebConfig

BROWSERS = 2  # event-stream clients connected during the web phase
MAX_SLOWDOWN = 0.10  # the video path may slow by at most this share with the dashboard


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
    p.add_argument(
        "--web",
        action="store_true",
        help="run twice: without and with the web sink and two browsers (latency, CPU)",
    )
    p.set_defaults(func=cmd_bench_live)


async def _browser(port: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """An event-stream reader that keeps reconnecting until ``stop`` (like a browser)."""
    url = f"http://127.0.0.1:{port}/events"
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            try:
                async with http.get(url) as r:
                    async for line in r.content:
                        if line.startswith(b"event: state"):
                            counts["events"] += 1
                        counts["bytes"] += len(line)
                        if stop.is_set():
                            return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def _phase(
    cfg: AppConfig, clip: Path, duration_s: float, warmup_s: float, web: bool
) -> dict[str, Any]:
    stop = asyncio.Event()
    counts = {"events": 0, "bytes": 0}
    browsers: list[asyncio.Task[None]] = []
    if web:
        port = free_port()
        cfg = cfg.model_copy(update={"web": WebConfig(port=port)})
        browsers = [asyncio.create_task(_browser(port, stop, counts)) for _ in range(BROWSERS)]
    cpu0, t0 = process_cpu_s(), time.monotonic()
    try:
        result = await measure_live(cfg, clip, duration_s, warmup_s)
    finally:
        stop.set()
        for task in browsers:
            task.cancel()
        await asyncio.gather(*browsers, return_exceptions=True)
    cpu, wall = process_cpu_s() - cpu0, time.monotonic() - t0
    return {
        "latency_ms": result["latency_ms"],
        "analysed_fps": round(result["va_samples"] / max(result["duration_s"], 1e-9), 2),
        "frames_decoded": result["frames_decoded"],
        "frames_skipped": result["frames_skipped"],
        "skipped_share": result["skipped_share"],
        "cpu_share_of_one_core": round(cpu / wall, 3),
        "events_received": counts["events"],
        "event_bytes_received": counts["bytes"],
    }


async def live_web_figures(
    cfg: AppConfig, clip: Path, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """The live bench without and with the web sink and two browsers, in one run."""
    off = await _phase(cfg, clip, duration_s, warmup_s, web=False)
    on = await _phase(cfg, clip, duration_s, warmup_s, web=True)
    p50_off = off["latency_ms"]["p50"] or 0.0
    p50_on = on["latency_ms"]["p50"] or 0.0
    fps_ratio = on["analysed_fps"] / off["analysed_fps"] if off["analysed_fps"] else None
    return {
        "bench": "live-web",
        "clip": clip.name,
        "browsers": BROWSERS,
        "web_off": off,
        "web_on": on,
        "analysed_fps_ratio_on_over_off": None if fps_ratio is None else round(fps_ratio, 3),
        "latency_p50_ratio_on_over_off": round(p50_on / p50_off, 3) if p50_off else None,
        "cpu_share_added": round(on["cpu_share_of_one_core"] - off["cpu_share_of_one_core"], 3),
        "video_slowed_within_10_percent": fps_ratio is not None and fps_ratio >= 1 - MAX_SLOWDOWN,
    }


def cmd_bench_live(args: argparse.Namespace) -> int:
    if args.duration_s <= 0 or args.warmup_s < 0 or not 1 <= args.cameras <= 64:
        raise ConfigError("--duration-s must be > 0, --warmup-s >= 0, --cameras in 1..64")
    reason = gst_rtsp_unavailable()
    if reason:
        raise MediaError(f"bench live needs the GStreamer RTSP server: {reason}")
    cfg = load_config(args.config) if args.config else AppConfig()
    clip = resolve_media(args.clip)
    if args.web:
        return emit(asyncio.run(live_web_figures(cfg, clip, args.duration_s, args.warmup_s)))
    return emit(asyncio.run(measure_live(cfg, clip, args.duration_s, args.warmup_s, args.cameras)))
