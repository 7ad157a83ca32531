"""The live measurement three benches share (``bench live``, ``bench cameras`` and
``bench live --web``).

A real GStreamer RTSP server on loopback serves a clip (looped by remuxing, no
re-encode) at its native frame rate; :func:`measure_live` points ``cameras``
:class:`~streamer.sources.live.LiveSource` objects at it and analyses them live on one
pipeline. Reported as JSON-ready figures:

* ``latency_ms``: from a frame's arrival (decoded by the source, before the mailbox) to
  its VA result on the bus, per VA sample: p50, p95, p99, max;
* ``detector_runs`` and ``detections_deferred``: runs of the face detector, and due runs
  moved to a later frame because other cameras held every detector slot;
* ``frames_skipped``: frames the latest-frame-wins mailbox replaced because the
  analysis was busy; ``frames_skipped_by_rate``: frames off the cameras' analysis grid
  (``analysis.fps``), never handed over, by design; ``frames_not_decoded``: of those,
  the non-reference pictures left undecoded;
* ``cpu``: process CPU in the measured window (every thread: decoding, analysis,
  sinks; the RTSP server is another process), in cores and in ms per camera-second;
* ``rss_mb``: resident memory after warm-up and at the end (plus samples over the
  run), and before the sources started (``before_sources``: the models loaded).

``others`` of the cameras may read a second clip (``other_clip``, its own server): the
mix of ``bench cameras``, where some cameras watch a room without a face. With
``decode_only`` the frames are taken from the sources and dropped (no analysis): what
decoding alone costs the same cameras.

Needs Debian's ``/usr/bin/python3`` with ``python3-gi`` and gst-rtsp-server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.bench.harness import percentiles_ms, process_cpu_s, rss_mb
from streamer.bus import Subscription
from streamer.compose import Composition, build_pipeline
from streamer.config import AppConfig
from streamer.messages import Frame, Message, VASample
from streamer.pipeline import Pipeline, first_error
from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource, SourceStats, build_sources
from streamer.testing.sources import RtspServer, loop_clip

logger = logging.getLogger(__name__)

CAMERA = "bench"
ARRIVALS_KEPT = 4096  # frame arrival times remembered for latency matching
RSS_SAMPLE_S = 5.0  # seconds between RSS samples
BENCH_STAGGER_S = 0.2  # seconds between starting the sources of a multi-camera bench


@dataclass
class _Probe:
    """What the bench measures while the pipeline runs."""

    cams: list[str]
    arrivals: dict[str, collections.OrderedDict[int, float]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    measuring: asyncio.Event = field(default_factory=asyncio.Event)
    rss_before: float = 0.0  # MiB, before the sources started

    def __post_init__(self) -> None:
        self.arrivals = {c: collections.OrderedDict() for c in self.cams}

    async def frames(self, source: LiveSource) -> AsyncIterator[Frame]:
        """The source's frames, their arrival times noted for latency matching."""
        seen = self.arrivals[source.name]
        async for frame in source:
            seen[frame.index] = frame.wall_time
            while len(seen) > ARRIVALS_KEPT:
                seen.popitem(last=False)
            yield frame

    async def collect(self, sub: Subscription) -> None:
        """Latency of every VA sample from its frame's arrival (while measuring)."""
        async for msg in sub:
            assert isinstance(msg, VASample)
            arrived = self.arrivals[msg.camera].get(msg.frame)
            if self.measuring.is_set() and arrived and msg.wall_time:
                self.latencies.append(msg.wall_time - arrived)

    def sample_rss(self, t0: float) -> None:
        self.rss_samples.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))

    async def rss_loop(self, t0: float) -> None:
        while True:
            self.sample_rss(t0)
            await asyncio.sleep(RSS_SAMPLE_S)


async def measure_live(
    cfg: AppConfig,
    clip: Path,
    duration_s: float,
    warmup_s: float,
    cameras: int = 1,
    *,
    other_clip: Path | None = None,
    others: int = 0,
    decode_only: bool = False,
    hwaccel: str | None = None,
) -> dict[str, Any]:
    """Serve ``clip`` over RTSP to ``cameras`` sources, analyse them live and measure.

    Args:
        cfg: the config (its ``analysis.fps`` is every camera's rate; cameras ignored).
        clip: what the cameras see.
        duration_s: the measured window (seconds).
        warmup_s: seconds before it, left out.
        cameras: how many cameras.
        other_clip: what the first ``others`` cameras see instead (its own server).
        others: how many cameras see ``other_clip``.
        decode_only: take the frames and drop them: no analysis.
        hwaccel: the cameras' FFmpeg hardware decoder (``cuda``: NVDEC), CPU fallback.
    """
    others = others if other_clip is not None else 0
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp, contextlib.ExitStack() as st:
        seconds = duration_s + warmup_s + 30.0
        served = loop_clip(clip, Path(tmp) / "served.mp4", seconds)
        server = st.enter_context(RtspServer(served))
        urls = [server.url] * cameras
        if other_clip is not None and others:
            served_other = loop_clip(other_clip, Path(tmp) / "other.mp4", seconds)
            other = st.enter_context(RtspServer(served_other))
            urls[:others] = [other.url] * others
        names = [f"{CAMERA}{i}" if cameras > 1 else CAMERA for i in range(cameras)]
        cams = [
            CameraConfig(name=name, url=url, hwaccel=hwaccel)
            for name, url in zip(names, urls, strict=True)
        ]
        pipe = build_pipeline(cfg.model_copy(update={"cameras": cams}))
        sub = pipe.bus.subscribe("bench", maxsize=100_000, accept=_is_va)
        probe = _Probe(names)
        try:
            # The collector reads the bus until the composition closes it.
            async with asyncio.TaskGroup() as tg, Composition(pipe) as run:
                tg.create_task(probe.collect(sub), name="bench-collect")
                sources = build_sources(cams, run.bus, analysis_fps=cfg.analysis.fps)
                for src in sources:
                    run.add_source(src.name, src)
                probe.rss_before = rss_mb()
                window = await _measure(pipe, sources, probe, warmup_s, duration_s, decode_only)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
    report = _report(clip, pipe, sources, probe, window, cameras)
    report.update(others=others, decode_only=decode_only, analysis_fps=cfg.analysis.fps)
    report["hwaccel"] = hwaccel
    report["hwaccel_fell_back"] = sum(src.hwaccel_failed for src in sources)
    return report


@dataclass(frozen=True)
class _Window:
    start: list[SourceStats]
    end: list[SourceStats]
    wall_s: float
    cpu_s: float
    analysed: int  # frames analysed in the window, every camera


async def _drain(source: LiveSource) -> None:
    """Take every frame the source hands over and drop it (decode-only runs)."""
    async for _ in source:
        pass


async def _measure(
    pipe: Pipeline,
    sources: list[LiveSource],
    probe: _Probe,
    warmup_s: float,
    duration_s: float,
    decode_only: bool = False,
) -> _Window:
    """Start the sources and their analyses; measure after the warm-up; stop them."""
    for source in sources:
        source.start()
        # gst-rtsp-server can wedge a shared media that many clients set up in the same
        # instant; real cameras are not opened in lockstep either.
        await asyncio.sleep(BENCH_STAGGER_S)
    async with asyncio.TaskGroup() as tg:
        for src in sources:
            if decode_only:
                tg.create_task(_drain(src), name=f"bench-{src.name}")
            else:
                run = pipe.run_camera(src.name, probe.frames(src), lossless=False)
                tg.create_task(run, name=f"bench-{src.name}")
        try:
            await asyncio.sleep(warmup_s)
            start = [src.stats() for src in sources]
            analysed0 = _analysed(pipe, sources)
            probe.measuring.set()
            t0, c0 = time.monotonic(), process_cpu_s()
            sampler = tg.create_task(probe.rss_loop(t0), name="bench-rss")
            await asyncio.sleep(duration_s)
            sampler.cancel()
            probe.sample_rss(t0)
            end = [src.stats() for src in sources]
            wall_s, cpu_s = time.monotonic() - t0, process_cpu_s() - c0
            analysed = _analysed(pipe, sources) - analysed0
        finally:
            await asyncio.gather(*(src.aclose() for src in sources))
    return _Window(start, end, wall_s, cpu_s, analysed)


def _analysed(pipe: Pipeline, sources: list[LiveSource]) -> int:
    return sum(st.frames for name, st in pipe.stats.items() if name in {s.name for s in sources})


def _report(
    clip: Path,
    pipe: Pipeline,
    sources: list[LiveSource],
    probe: _Probe,
    window: _Window,
    cameras: int,
) -> dict[str, Any]:
    pairs = list(zip(window.start, window.end, strict=True))
    decoded = sum(e.frames - s.frames for s, e in pairs)
    skipped = sum(e.skipped - s.skipped for s, e in pairs)
    by_rate = sum(e.skipped_by_rate - s.skipped_by_rate for s, e in pairs)
    not_decoded = sum(e.not_decoded - s.not_decoded for s, e in pairs)
    rss_values = [r for _, r in probe.rss_samples]
    stats = [pipe.stats[c] for c in probe.cams if c in pipe.stats]
    return {
        "bench": "live",
        "clip": clip.name,
        "transport": "rtsp/tcp (GStreamer server on loopback)",
        "model": pipe.model_name,
        "cpus": os.cpu_count(),
        "cameras": cameras,
        "duration_s": round(window.wall_s, 1),
        "camera_fps": round(sources[0].fps or 0.0, 3),
        "frames_decoded": decoded,
        "frames_skipped": skipped,
        "frames_skipped_by_rate": by_rate,
        "frames_not_decoded": not_decoded,
        "frames_analysed": window.analysed,
        "skipped_share": round(skipped / (decoded - by_rate), 4) if decoded > by_rate else None,
        "frames_analysed_total": sum(st.frames for st in stats),
        "detector_runs": sum(st.detector_runs for st in stats),
        "detections_deferred": sum(st.detections_deferred for st in stats),
        "detections_idle_skipped": sum(st.detections_idle_skipped for st in stats),
        "cpu": {
            "cores": round(window.cpu_s / window.wall_s, 3),
            "ms_per_camera_s": round(1000.0 * window.cpu_s / window.wall_s / cameras, 2),
        },
        "va_samples": len(probe.latencies),
        "latency_ms": percentiles_ms(probe.latencies),
        "rss_mb": {
            "before_sources": round(probe.rss_before, 1),
            "start": rss_values[0] if rss_values else None,
            "end": rss_values[-1] if rss_values else None,
            "max": max(rss_values) if rss_values else None,
            "sample_t_s": [t for t, _ in probe.rss_samples],
            "sample_mb": rss_values,
        },
        "reconnects": sum(e.reconnects for e in window.end),
        "stalls": sum(e.stalls for e in window.end),
        "corrupt": sum(e.corrupt for e in window.end),
        "ms_per_frame_by_stage": stats[0].stage_ms_per_frame() if stats else {},
    }


def _is_va(msg: Message) -> bool:
    return isinstance(msg, VASample)
