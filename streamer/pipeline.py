"""The analysis pipeline, shared by replay and live runs.

Per camera, frames flow through two overlapping steps::

    frames ──▶ prepare (thread: detect every N frames, track, crop) ──▶ queue(2)
           ──▶ VA (AffectEngine, batched across cameras) ──▶ smooth ──▶ EventBus

Preparing frame k+1 overlaps the VA inference of frame k; decoding runs ahead in the
source's own thread. Everything leaves through the :class:`EventBus`: the JSONL writer,
MQTT, the describer and later sinks subscribe to it. The pipeline knows no sink: the
composition root (:mod:`streamer.compose`) builds it and wires them.

    pipe = build_pipeline(cfg, store)           # models load here
    async with Composition(pipe, SinkOptions(out=path, replay=True)):
        async with FileSource(video) as src:
            stats = await pipe.run_camera(src.camera, src, lossless=True)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streamer.bus import EventBus
from streamer.config import AppConfig
from streamer.faces.crops import CROP_SIZE, crop_faces_bgr
from streamer.faces.motion import MotionGate
from streamer.faces.schedule import DetectionSchedule, DetectorSlots
from streamer.faces.tracker import Track, Tracker
from streamer.lifecycle import SingleUse
from streamer.messages import (
    Detection,
    Frame,
    Message,
    PreviewFrame,
    TrackEvent,
    TrackEventKind,
    VASample,
    clamp_va,
)
from streamer.samples import RecentSamples
from streamer.smoothing import VAFilter, kalman_filter_class

if TYPE_CHECKING:
    from streamer.affect.models import VAModel

logger = logging.getLogger(__name__)

STAGES = ("decode", "detect", "track", "crop", "va", "smooth")
LATENCY_WINDOW = 10_000  # latest per-frame latencies kept for percentiles
# With an analysis rate, a track outlives its last detection by at least this many
# analysis intervals (0.7 s at 5 fps): one missed detection never ends it, even at the
# longest detector interval (every second analysed frame at 5 fps from 15 fps).
RATE_TRACK_PATIENCE = 3.5  # analysis intervals


@dataclass
class CameraStats:
    """Counters and per-stage time of one camera's run."""

    camera: str
    frames: int = 0
    faces: int = 0
    detector_runs: int = 0
    detections_deferred: int = 0  # due detector runs moved to a later frame (no free slot)
    # Due detector runs left out: no track and the picture unchanged (empty room).
    detections_idle_skipped: int = 0
    skipped_by_rate: int = 0  # good frames off the analysis grid (analysis_fps), by design
    va_rejected: int = 0  # non-finite or failed VA results (predict-only steps)
    tracks_appeared: int = 0
    tracks_live: int = 0  # confirmed tracks now (the tracker's count after the last frame)
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    # Seconds from a frame's decode (wall clock) to its VA result; live runs only.
    latencies_s: RecentSamples = field(default_factory=lambda: RecentSamples(LATENCY_WINDOW))
    # Seconds of each detector run, VA call and whole frame (prepare to results), for
    # histograms (streamer.web.metrics).
    samples: dict[str, RecentSamples] = field(
        default_factory=lambda: {k: RecentSamples() for k in ("detect", "va", "frame")}
    )

    def stage_ms_per_frame(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {k: round(v * 1000.0 / n, 3) for k, v in self.stage_s.items()}


@dataclass(frozen=True)
class _Seen:
    """A snapshot of a track taken in ``prepare`` (tracks mutate on the next frame)."""

    id: int
    box: tuple[float, float, float, float]
    first_t: float
    last_t: float

    @classmethod
    def of(cls, tr: Track) -> _Seen:
        return cls(tr.id, tr.box, tr.first_t, tr.last_t)


@dataclass(frozen=True)
class _Prepared:
    frame: Frame
    visible: list[_Seen]
    appeared: list[_Seen]
    lost: list[_Seen]
    crops: np.ndarray  # (N, 64, 64) uint8, owned by this frame
    started: float = 0.0  # perf_counter() when prepare began


class CameraAnalyzer:
    """Detector, tracker and VA filters of one camera (not thread-safe by design:
    ``prepare`` runs in one worker thread at a time, ``finish`` on the event loop)."""

    def __init__(
        self,
        camera: str,
        cfg: AppConfig,
        detector: FaceDetector,
        model_name: str,
        stats: CameraStats,
        live: bool = False,
        slots: DetectorSlots | None = None,
        end_reason: str | None = None,
    ) -> None:
        self.camera = camera
        self.end_reason = end_reason
        # Shared with the pipeline's other cameras; alone, a camera never waits for one.
        self.slots = slots or DetectorSlots()
        self.cfg = cfg
        self.detector = detector
        # Media-time analysis rate of this camera (None: every frame).
        self.rate = cfg.analysis_fps(camera)
        max_age = None
        if self.rate is not None:
            max_age = max(cfg.faces.tracker.max_age_s, RATE_TRACK_PATIENCE / self.rate)
        self.tracker = Tracker(cfg.faces.tracker, max_age_s=max_age)
        self.model_name = model_name
        self.stats = stats
        self.filters: dict[int, VAFilter] = {}
        self.live: set[int] = set()  # confirmed tracks not lost yet (appeared, not lost)
        self.stats.tracks_live = 0
        self.schedule = DetectionSchedule(cfg.faces.detector)
        self.motion = MotionGate(cfg.faces.detector)
        self._last_index: int | None = None
        if live:
            # filterpy (the VA filters; about 1 s to import: scipy) before the first live
            # frame, once per process (`streamer run` has it before any camera opens). A
            # replay imports it at its first confirmed track, and a clip without one never.
            kalman_filter_class()

    def prepare(self, frame: Frame) -> _Prepared:
        """Detect (every N frames), track and crop: the blocking part, run in a thread."""
        t0 = time.perf_counter()
        # Frames of the stream since the last analysed one: counted with an analysis
        # rate (the schedule and the box filters step over the frames between); one
        # otherwise, as frames replaced by a busy analysis always were.
        frames = 1
        if self.rate is not None and self._last_index is not None:
            frames = max(1, frame.index - self._last_index)
        self._last_index = frame.index
        detections = None
        if self.schedule.due(frames):
            if self.tracker.tracks or not self.motion.enabled:
                self.motion.reset()
            elif self.motion.quiet(frame.image, frame.t):
                # Nothing to look for: the due run is served (and the check's time
                # counts as detection).
                self.schedule.ran()
                self.stats.detections_idle_skipped += 1
                return self._track(frame, None, frames, t0, time.perf_counter())
            # Overdue, the run goes ahead without a slot rather than wait for one: with
            # many cameras, waiting held the analysis threads behind the one slot and
            # piled the cameras up (docs/performance.md, many cameras).
            overdue = self.schedule.overdue
            slot = self.slots.acquire(wait=False)
            if slot is not None or overdue:
                try:
                    detections = self.detector.detect(frame.image)
                finally:
                    if slot is not None:
                        self.slots.release(slot)
                self.schedule.ran()
                self.motion.ran(frame.t)
                self.stats.detector_runs += 1
                self.stats.samples["detect"].add(time.perf_counter() - t0)
            else:
                self.schedule.defer()
                self.stats.detections_deferred += 1
        return self._track(frame, detections, frames, t0, time.perf_counter())

    def _track(
        self,
        frame: Frame,
        detections: list[Detection] | None,
        frames: int,
        t0: float,
        t1: float,
    ) -> _Prepared:
        """Track (and crop) after the detection step of ``prepare``."""
        st = self.stats.stage_s
        step = self.tracker.step(frame.t, detections, frames)
        if detections is not None:
            self.schedule.observe(self.tracker, step)
        t2 = time.perf_counter()
        if step.visible:
            # A fresh array per frame: the VA step of this frame overlaps the next prepare.
            crops = crop_faces_bgr(
                frame.image,
                [tr.box for tr in step.visible],
                [tr.angle if self.cfg.faces.crop.align else 0.0 for tr in step.visible],
                margin=self.cfg.faces.crop.margin,
            )
        else:
            crops = np.empty((0, CROP_SIZE, CROP_SIZE), np.uint8)
        t3 = time.perf_counter()
        st["detect"] += t1 - t0
        st["track"] += t2 - t1
        st["crop"] += t3 - t2
        return _Prepared(
            frame,
            [_Seen.of(tr) for tr in step.visible],
            [_Seen.of(tr) for tr in step.appeared],
            [_Seen.of(tr) for tr in step.lost],
            crops,
            t0,
        )

    def finish(self, prep: _Prepared, va: np.ndarray, live: bool) -> list[Message]:
        """Smooth each visible track's VA and build the messages of one frame."""
        t0 = time.perf_counter()
        frame = prep.frame
        wall = time.time() if live else None
        out: list[Message] = []
        sm = self.cfg.smoothing
        for tr in prep.appeared:
            self.filters[tr.id] = VAFilter(
                sm.process_noise_per_s, sm.measurement_noise, sm.initial_variance
            )
            self.stats.tracks_appeared += 1
            self.live.add(tr.id)
            out.append(
                TrackEvent(self.camera, tr.id, TrackEventKind.APPEARED, frame.index, frame.t, wall)
            )
        visible_ids = set()
        for i, tr in enumerate(prep.visible):
            visible_ids.add(tr.id)
            v_raw, a_raw = float(va[i, 0]), float(va[i, 1])
            if not (math.isfinite(v_raw) and math.isfinite(a_raw)):
                self.stats.va_rejected += 1
                v_raw_out = a_raw_out = None
            else:
                v_raw_out, a_raw_out = clamp_va(v_raw), clamp_va(a_raw)
            filt = self.filters[tr.id]
            v, a, var = filt.step(frame.t, v_raw_out, a_raw_out)
            out.append(
                VASample(
                    self.camera,
                    frame.index,
                    frame.t,
                    tr.id,
                    tr.box,
                    v,
                    a,
                    v_raw_out,
                    a_raw_out,
                    var,
                    self.model_name,
                    wall,
                )
            )
        # Tracks that exist but were not seen: predict-only, no record.
        for tid, filt in self.filters.items():
            if tid not in visible_ids:
                filt.step(frame.t, None, None)
        for tr in prep.lost:
            self.filters.pop(tr.id, None)
            self.live.discard(tr.id)
            out.append(self._lost(tr, frame, wall))
        # Every analysed frame, faces or not: an empty room reads 0 once its tracks end.
        self.stats.tracks_live = len(self.live)
        self.stats.faces += len(prep.visible)
        self.stats.stage_s["smooth"] += time.perf_counter() - t0
        return out

    def _lost(
        self, tr: _Seen | Track, frame: Frame, wall: float | None, reason: str | None = None
    ) -> TrackEvent:
        """The ``lost`` event of a track, at ``frame``."""
        return TrackEvent(
            self.camera,
            tr.id,
            TrackEventKind.LOST,
            frame.index,
            frame.t,
            wall,
            duration_s=tr.last_t - tr.first_t,
            reason=reason,
        )

    def end_of_stream(self, frame: Frame | None, live: bool) -> list[Message]:
        """Close every remaining confirmed track (the stream is over; prepare is done)."""
        out: list[Message] = []
        if frame is None:
            return out
        wall = time.time() if live else None
        for tr in self.tracker.tracks:
            if tr.confirmed:
                out.append(self._lost(tr, frame, wall, self.end_reason))
        self.tracker.tracks.clear()
        self.filters.clear()
        self.live.clear()
        self.stats.tracks_live = 0
        return out


class FaceDetector(Protocol):
    """Finds faces in a BGR frame (YuNet in production, fakes in tests)."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face of ``image`` (H, W, 3) uint8 BGR, boxes in its pixels."""
        ...


DetectorFactory = Callable[[], FaceDetector]  # one detector per camera analysis


class Pipeline(SingleUse):
    """The per-camera analysis on a shared VA engine and bus; replay and live share it.

    Its dependencies are passed in; :func:`streamer.compose.build_pipeline` loads them
    from the model store, and :class:`streamer.compose.Composition` wires the sinks.

    Everything it finds goes to the bus: results as messages, and each analysed frame as
    a :class:`~streamer.messages.PreviewFrame` when some subscriber reads previews.

    Args:
        cfg: the app config (faces, affect, smoothing sections).
        model: the VA model; the pipeline's :class:`AffectEngine` runs it.
        detector_factory: makes the face detector of each camera analysis.
        bus: the event bus every result goes to (default: a new one).
        end_reason: the ``reason`` of the ``lost`` events that close the tracks still
            open when a stream ends (None: no reason in the record).
    """

    def __init__(
        self,
        cfg: AppConfig,
        model: VAModel,
        detector_factory: DetectorFactory,
        *,
        bus: EventBus | None = None,
        end_reason: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.detector_factory = detector_factory
        self.end_reason = end_reason
        from streamer.affect.engine import AffectEngine  # the affect stack loads on use

        self.bus = bus or EventBus()
        self.engine = AffectEngine.from_config(model, cfg.affect)
        # Shared by the cameras' analyses: bounds the detector runs happening at once.
        self.detector_slots = DetectorSlots(cfg.faces.detector.concurrent_runs)
        self.stats: dict[str, CameraStats] = {}

    @property
    def model_name(self) -> str:
        return str(self.model.name)

    @property
    def model_approximate(self) -> bool:
        """Whether the VA model is an approximation (said on every output)."""
        return bool(self.model.approximate)

    async def __aenter__(self) -> Pipeline:
        self._enter_once()
        await self.engine.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.engine.__aexit__(exc_type, exc, tb)

    async def run_camera(
        self,
        camera: str,
        frames: AsyncIterable[Frame],
        *,
        lossless: bool,
        decode_stats: dict[str, Any] | None = None,
    ) -> CameraStats:
        """Analyse ``frames`` until they end; returns the camera's counters.

        Args:
            camera: camera name (outputs and topics).
            frames: the source (replay: every frame; live: latest-frame-wins).
            lossless: replay mode: wait for slow lossless sinks instead of dropping, and
                outputs carry media time only (deterministic).
            decode_stats: the source's counters; ``decode_s`` and ``skipped_by_rate``
                are copied into the stats.
        """
        stats = self.stats.setdefault(camera, CameraStats(camera))
        detector = self.detector_factory()
        analyzer = CameraAnalyzer(
            camera,
            self.cfg,
            detector,
            self.model_name,
            stats,
            live=not lossless,
            slots=self.detector_slots,
            end_reason=self.end_reason,
        )
        live = not lossless
        handoff: asyncio.Queue[_Prepared | None] = asyncio.Queue(maxsize=2)

        async def prepare_loop() -> None:
            async for frame in frames:
                prep = await asyncio.to_thread(analyzer.prepare, frame)
                await handoff.put(prep)
            # The end. Not in a `finally`: on an error or a cancellation the task group
            # cancels infer_loop, and a put into the full queue would wait for ever.
            await handoff.put(None)

        async def infer_loop() -> None:
            last: Frame | None = None
            while (prep := await handoff.get()) is not None:
                t0 = time.perf_counter()
                if len(prep.crops):
                    va = await self.engine.infer(prep.crops)
                    stats.samples["va"].add(time.perf_counter() - t0)
                else:
                    va = np.empty((0, 2), np.float32)
                stats.stage_s["va"] += time.perf_counter() - t0
                msgs = analyzer.finish(prep, va, live)
                for msg in msgs:
                    await self.bus.publish(msg)
                if self.bus.wants_previews:
                    self.bus.publish_preview(_preview(prep.frame, msgs))
                stats.frames += 1
                stats.samples["frame"].add(time.perf_counter() - prep.started)
                if prep.frame.wall_time:
                    stats.latencies_s.append(time.time() - prep.frame.wall_time)
                last = prep.frame
            for msg in analyzer.end_of_stream(last, live):
                await self.bus.publish(msg)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(prepare_loop(), name=f"prepare-{camera}")
                tg.create_task(infer_loop(), name=f"infer-{camera}")
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            stats.tracks_live = 0  # this session's tracker is gone, whatever ended it
        _copy_decode_stats(stats, decode_stats)
        return stats


def _copy_decode_stats(stats: CameraStats, decode_stats: dict[str, Any] | None) -> None:
    """The source's own counters into the camera's (``decode_s``, ``skipped_by_rate``)."""
    if not decode_stats:
        return
    if "decode_s" in decode_stats:
        stats.stage_s["decode"] = float(decode_stats["decode_s"])
    stats.skipped_by_rate = int(decode_stats.get("skipped_by_rate", 0))


def _preview(frame: Frame, msgs: list[Message]) -> PreviewFrame:
    faces = tuple(m for m in msgs if isinstance(m, VASample))
    return PreviewFrame(frame.camera, frame.index, frame.image, faces)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error a caller should see from a task group (ours before library ones)."""
    from streamer.errors import StreamerError

    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    for e in leaves:
        if isinstance(e, StreamerError):
            return e
    return leaves[0]
