"""Figures of the views for ``streamer bench``: ``replay --annotate`` and ``live --web``.

* ``bench replay VIDEO --annotate``: replay fps without and with the annotated video
  (the second pass that draws and re-encodes), in the same run.
* ``bench live --web``: the live bench twice in one run, without the web sink and with
  it on plus two browsers reading ``/events`` (plain HTTP clients); latency, process CPU
  and analysed fps of both, and their ratios. The dashboard must not slow the video by
  more than 10 %.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from streamer.annotate import AnnotationRecorder, write_annotated
from streamer.cli.bench_replay import process_cpu_s
from streamer.compose import Composition, SinkOptions, build_pipeline
from streamer.config import AppConfig
from streamer.sources.file import FileSource
from streamer.store import default_store
from streamer.testing.net import free_port
from streamer.web.config import WebConfig

BROWSERS = 2  # event-stream clients connected during the web phase
MAX_SLOWDOWN = 0.10  # the video path may slow by at most this share with the dashboard


async def _replay_once(cfg: AppConfig, path: Path, annotate_to: Path | None) -> dict[str, float]:
    source = FileSource(path)
    t0 = time.perf_counter()
    async with source:
        pipe = build_pipeline(cfg, default_store())
        recorder = AnnotationRecorder(pipe.bus) if annotate_to else None
        async with Composition(pipe, SinkOptions(replay=True)):
            recording = asyncio.create_task(recorder.consume()) if recorder else None
            stats = await pipe.run_camera(
                source.camera, source, lossless=True, decode_stats=source.counters
            )
    t_replay = time.perf_counter() - t0
    t_annotate = 0.0
    if recorder is not None and recording is not None and annotate_to is not None:
        await recording
        t1 = time.perf_counter()
        await asyncio.to_thread(write_annotated, path, annotate_to, recorder.overlays)
        t_annotate = time.perf_counter() - t1
    return {
        "frames": stats.frames,
        "replay_s": t_replay,
        "annotate_s": t_annotate,
        "fps": stats.frames / (t_replay + t_annotate),
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
    from streamer.cli.bench_live import bench_live

    stop = asyncio.Event()
    counts = {"events": 0, "bytes": 0}
    browsers: list[asyncio.Task[None]] = []
    if web:
        port = free_port()
        cfg = cfg.model_copy(update={"web": WebConfig(port=port)})
        browsers = [asyncio.create_task(_browser(port, stop, counts)) for _ in range(BROWSERS)]
    cpu0, t0 = process_cpu_s(), time.monotonic()
    try:
        result = await bench_live(cfg, clip, duration_s, warmup_s)
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
