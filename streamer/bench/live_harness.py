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
  analysis was busy;
* ``rss_mb``: resident memory after warm-up and at the end (plus samples over the run).

Needs Debian's ``/usr/bin/python3`` with ``python3-gi`` and gst-rtsp-server.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.bench.harness import percentiles_ms, rss_mb
from streamer.bus import Subscription
from streamer.compose import Composition, build_pipeline
from streamer.config import AppConfig
from streamer.messages import Frame, Message, VASample
from streamer.pipeline import Pipeline, first_error
from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource, SourceStats
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
    cfg: AppConfig, clip: Path, duration_s: float, warmup_s: float, cameras: int = 1
) -> dict[str, Any]:
    """Serve ``clip`` over RTSP to ``cameras`` sources, analyse them live and measure."""
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp:
        served = loop_clip(clip, Path(tmp) / "served.mp4", duration_s + warmup_s + 30.0)
        with RtspServer(served) as server:
            names = [f"{CAMERA}{i}" if cameras > 1 else CAMERA for i in range(cameras)]
            cams = [CameraConfig(name=name, url=server.url) for name in names]
            pipe = build_pipeline(cfg.model_copy(update={"cameras": cams}))
            sub = pipe.bus.subscribe("bench", maxsize=100_000, accept=_is_va)
            probe = _Probe(names)
            try:
                # The collector reads the bus until the composition closes it.
                async with asyncio.TaskGroup() as tg, Composition(pipe) as run:
                    tg.create_task(probe.collect(sub), name="bench-collect")
                    sources = [LiveSource(c, run.bus) for c in cams]
                    for src in sources:
                        run.add_source(src.name, src)
                    window = await _measure(pipe, sources, probe, warmup_s, duration_s)
            except BaseExceptionGroup as group:
                raise first_error(group) from None
    return _report(clip, pipe, sources, probe, window, cameras)


@dataclass(frozen=True)
class _Window:
    start: list[SourceStats]
    end: list[SourceStats]
    wall_s: float


async def _measure(
    pipe: Pipeline,
    sources: list[LiveSource],
    probe: _Probe,
    warmup_s: float,
    duration_s: float,
) -> _Window:
    """Start the sources and their analyses; measure after the warm-up; stop them."""
    for source in sources:
        source.start()
        # gst-rtsp-server can wedge a shared media that many clients set up in the same
        # instant; real cameras are not opened in lockstep either.
        await asyncio.sleep(BENCH_STAGGER_S)
    async with asyncio.TaskGroup() as tg:
        for src in sources:
            run = pipe.run_camera(src.name, probe.frames(src), lossless=False)
            tg.create_task(run, name=f"bench-{src.name}")
        try:
            await asyncio.sleep(warmup_s)
            start = [src.stats() for src in sources]
            probe.measuring.set()
            t0 = time.monotonic()
            sampler = tg.create_task(probe.rss_loop(t0), name="bench-rss")
            await asyncio.sleep(duration_s)
            sampler.cancel()
            probe.sample_rss(t0)
            end = [src.stats() for src in sources]
            wall_s = time.monotonic() - t0
        finally:
            await asyncio.gather(*(src.aclose() for src in sources))
    return _Window(start, end, wall_s)


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
    rss_values = [r for _, r in probe.rss_samples]
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
        "skipped_share": round(skipped / decoded, 4) if decoded else None,
        "frames_analysed_total": sum(pipe.stats[c].frames for c in probe.cams),
        "detector_runs": sum(pipe.stats[c].detector_runs for c in probe.cams),
        "detections_deferred": sum(pipe.stats[c].detections_deferred for c in probe.cams),
        "va_samples": len(probe.latencies),
        "latency_ms": percentiles_ms(probe.latencies),
        "rss_mb": {
            "start": rss_values[0] if rss_values else None,
            "end": rss_values[-1] if rss_values else None,
            "max": max(rss_values) if rss_values else None,
            "sample_t_s": [t for t, _ in probe.rss_samples],
            "sample_mb": rss_values,
        },
        "reconnects": sum(e.reconnects for e in window.end),
        "stalls": sum(e.stalls for e in window.end),
        "corrupt": sum(e.corrupt for e in window.end),
        "ms_per_frame_by_stage": pipe.stats[probe.cams[0]].stage_ms_per_frame(),
    }


def _is_va(msg: Message) -> bool:
    return isinstance(msg, VASample)
