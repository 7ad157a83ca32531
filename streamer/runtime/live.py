"""The live runtime: every camera of a config analysed until stopped.

Every camera gets a :class:`~streamer.sources.live.LiveSource` (its own decode thread,
watchdog and reconnects) and a supervised analysis task on the shared
:class:`~streamer.pipeline.Pipeline`; one camera's failure never stops another. A
camera's analysis that fails or hangs (frames keep coming, none is analysed) is
restarted after a growing delay; a restart storm marks it degraded
(:class:`~streamer.supervise.RestartPolicy`). SIGINT/SIGTERM stop everything: sources
close (their statuses go to ``stopped``), the analysis drains, sinks flush and MQTT
disconnects cleanly, within about 5 s.

    result = run_until_stopped(cfg, out=Path("live.jsonl"))  # blocking, own event loop
    result = await run_live(cfg, stop=stop_event)             # inside a running loop

``streamer run`` and the cluster's camera actors both run this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.backoff import Backoff, BackoffPolicy
from streamer.bus import EventBus
from streamer.compose import Composition, build_pipeline
from streamer.config import AppConfig
from streamer.errors import ConfigError
from streamer.lifecycle import stop_on_signals
from streamer.pipeline import CameraStats, Pipeline
from streamer.runtime.loop import run_in_fresh_loop
from streamer.runtime.memory import tidy_memory_every, tune_malloc
from streamer.sinks import SinkFactory, SinkOptions
from streamer.smoothing import kalman_filter_class
from streamer.sources.live import LiveSource, SourceStats, build_sources
from streamer.store import ArtifactStore
from streamer.supervise import RestartGuard, RestartPolicy

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 1.5  # after the sources closed, how long analysis may take to drain (s)
WATCH_EVERY_S = 0.5  # how often the analysis watchdog looks (s)


def select_cameras(cfg: AppConfig, names: list[str] | None, source: str) -> AppConfig:
    """``cfg`` restricted to the named cameras; errors when none is left."""
    cameras = cfg.cameras
    if names:
        known = {c.name for c in cameras}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"{source}: no camera named {', '.join(unknown)} (known: "
                f"{', '.join(sorted(known)) or 'none'})"
            )
        cameras = [c for c in cameras if c.name in names]
    if not cameras:
        raise ConfigError(f"{source}: no cameras configured (add `cameras: [{{name, url}}]`)")
    return cfg.model_copy(update={"cameras": cameras})


@dataclass
class RunResult:
    """What a live run did, per camera."""

    sources: dict[str, SourceStats] = field(default_factory=dict)
    cameras: dict[str, CameraStats] = field(default_factory=dict)
    analysis: dict[str, AnalysisHealth] = field(default_factory=dict)
    stop_s: float | None = None  # seconds from the stop request to the end of the run
    leftover_threads: list[str] = field(default_factory=list)
    left_in_ffmpeg: dict[str, str] = field(default_factory=dict)  # camera -> FFmpeg call


def run_until_stopped(cfg: AppConfig, **kwargs: Any) -> RunResult:
    """:func:`run_live` in a fresh event loop that never waits for stuck worker threads
    (:func:`~streamer.runtime.loop.run_in_fresh_loop`); the keywords are run_live's."""
    return run_in_fresh_loop(run_live(cfg, **kwargs))


async def run_live(
    cfg: AppConfig,
    *,
    out: Path | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    store: ArtifactStore | None = None,
    handle_signals: bool = True,
    pipeline: Pipeline | None = None,
    policy: RestartPolicy | None = None,
    overrides: Mapping[str, SinkFactory] | None = None,
    on_start: Callable[[Composition], None] | None = None,
) -> RunResult:
    """Run the live pipeline over ``cfg.cameras`` until ``stop`` is set (or a signal).

    Args:
        cfg: the app config; every camera in ``cfg.cameras`` is opened.
        out: JSONL output (replay's records, with ``wall_time``).
        duration_s: stop after this long (seconds).
        stop: set it to stop the run (tests, embedding).
        store: the model store (default: :func:`streamer.store.default_store`).
        handle_signals: install SIGINT/SIGTERM handlers that set ``stop``.
        pipeline: an already built pipeline (not yet entered), e.g. with fake models;
            default: :func:`~streamer.compose.build_pipeline` from ``store``.
        policy: how each camera's analysis is supervised (default:
            :class:`~streamer.supervise.RestartPolicy`).
        overrides: sink factories to use instead of the registered ones, by name (a
            cluster actor's own MQTT session); see :class:`~streamer.compose.Composition`.
        on_start: called with the entered composition before any camera opens (its
            view and sinks are then readable, e.g. by a cluster actor's status).

    Returns:
        The counters of every source and camera analysis.
    """
    stop = stop or asyncio.Event()
    tune_malloc()  # before the decode threads: resident memory stays flat for months
    threads_before = set(threading.enumerate())
    # filterpy (the VA smoothing; about 1 s to import: scipy) loads before any camera
    # opens, like the models, so no camera's first results wait for it.
    kalman_filter_class()
    if pipeline is None:
        # Models load before any camera opens: a missing model fails fast and clearly.
        bus = EventBus(lossless_wait_s=cfg.output.live_lossless_wait_s)
        pipeline = build_pipeline(cfg, store, bus=bus)
    result = RunResult()
    with stop_on_signals(stop, handle_signals):
        options = SinkOptions(out=out, atomic_out=False)
        async with Composition(pipeline, options, overrides=overrides) as run:
            sources = build_sources(cfg.cameras, run.bus, analysis_fps=cfg.analysis.fps)
            for src in sources:
                run.add_source(src.name, src)
            if on_start is not None:
                on_start(run)
            tidier = asyncio.create_task(tidy_memory_every(), name="memory-tidy")
            try:
                t_stop = await _run_cameras(
                    run.pipe, sources, stop, duration_s, result, policy or RestartPolicy()
                )
            finally:
                tidier.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tidier
            result.sources = {src.name: src.stats() for src in sources}
            result.left_in_ffmpeg = {s.name: s.left_behind for s in sources if s.left_behind}
            result.cameras = dict(run.pipe.stats)
    result.stop_s = time.monotonic() - t_stop
    await asyncio.sleep(0)
    # Decode threads left in an FFmpeg call bounded by its own timeout are reported as
    # such (left_in_ffmpeg); what is listed here is unexpected.
    left = {f"source-{name}" for name in result.left_in_ffmpeg}
    result.leftover_threads = [
        t.name
        for t in threading.enumerate()
        if t not in threads_before
        and t.is_alive()
        and not t.name.startswith("asyncio_")
        and t.name not in left
    ]
    return result


async def _run_cameras(
    pipe: Pipeline,
    sources: list[LiveSource],
    stop: asyncio.Event,
    duration_s: float | None,
    result: RunResult,
    policy: RestartPolicy,
) -> float:
    """Start every source and its supervised analysis; stop them all on ``stop``,
    after ``duration_s`` or when every camera ended.

    Returns:
        The monotonic time the stop began.
    """
    async with asyncio.TaskGroup() as tg:
        analyses = []
        for src in sources:
            src.start()
            health = result.analysis.setdefault(src.name, AnalysisHealth())
            loop = _camera_task(pipe, src, stop, health, policy)
            analyses.append(tg.create_task(loop, name=f"camera-{src.name}"))
        try:
            await _wait_for_stop(stop, duration_s, analyses)
        finally:
            t_stop = time.monotonic()
            stop.set()
            # Sources first (their statuses go to "stopped"), then the analyses drain.
            await asyncio.gather(*(src.aclose() for src in sources))
            _, pending = await asyncio.wait(analyses, timeout=DRAIN_TIMEOUT_S)
            for task in pending:
                logger.warning("%s did not drain in time; cancelling", task.get_name())
                task.cancel()
    return t_stop


async def _wait_for_stop(
    stop: asyncio.Event, duration_s: float | None, analyses: list[asyncio.Task[None]]
) -> None:
    """Return when ``stop`` is set, ``duration_s`` passed, or every analysis ended."""
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
    if analyses:
        waiters.add(asyncio.ensure_future(asyncio.wait(analyses)))
    try:
        await asyncio.wait(waiters, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _camera_task(
    pipe: Pipeline,
    source: LiveSource,
    stop: asyncio.Event,
    health: AnalysisHealth,
    policy: RestartPolicy,
) -> None:
    """:func:`camera_loop`, whose unexpected error is logged: other cameras go on."""
    try:
        await camera_loop(pipe, source, stop, health, policy=policy)
    except Exception:  # supervisor: one camera's bug never stops the others
        logger.exception("camera %s: supervision ended with an error", source.name)


@dataclass
class AnalysisHealth:
    """Supervision counters of one camera's analysis."""

    failures: int = 0  # run_camera raised
    hangs: int = 0  # frames kept coming but none was analysed for hang_timeout_s
    degraded: bool = False  # a restart storm (see RestartPolicy)


async def camera_loop(
    pipe: Pipeline,
    source: LiveSource,
    stop: asyncio.Event,
    health: AnalysisHealth | None = None,
    *,
    policy: RestartPolicy | None = None,
) -> AnalysisHealth:
    """Analyse one camera's frames, supervised; other cameras are never affected.

    A failure of the analysis (an exception) or a hang (the source keeps decoding frames
    but none is analysed for ``policy.hang_timeout_s``) restarts it after a growing
    delay (:class:`~streamer.backoff.Backoff`); more than ``policy.storm_restarts``
    restarts within ``policy.storm_window_s`` (:class:`~streamer.supervise.RestartGuard`)
    mark it degraded (logged once, then restarts wait ``policy.restart_max_s``). Returns
    when the source ends (stopped, or a file that finished).
    """
    health = health or AnalysisHealth()
    policy = policy or RestartPolicy()
    guard = RestartGuard(policy.storm_restarts, policy.storm_window_s)
    backoff = Backoff(BackoffPolicy(policy.restart_initial_s, policy.restart_max_s))
    while not stop.is_set():
        if await _analyse_once(pipe, source, health, policy.hang_timeout_s):
            return health
        restarts = guard.record()
        if guard.storm and not health.degraded:
            health.degraded = True
            logger.error(
                "camera %s: analysis restarted %d times within %.0f s: degraded, retrying "
                "every %.0f s",
                source.name,
                restarts,
                policy.storm_window_s,
                policy.restart_max_s,
            )
        delay = policy.restart_max_s if health.degraded else backoff.delay_for(restarts - 1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
    return health


async def _analyse_once(
    pipe: Pipeline, source: LiveSource, health: AnalysisHealth, hang_timeout_s: float
) -> bool:
    """One supervised analysis run; True when it ended because the source ended."""
    task = asyncio.create_task(
        pipe.run_camera(source.name, source, lossless=False), name=f"analysis-{source.name}"
    )
    try:
        hung = await _watch(task, pipe, source, hang_timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise
    if hung:
        health.hangs += 1
        task.cancel()  # the hung stage thread is abandoned; its task ends at once
        await asyncio.wait({task}, timeout=DRAIN_TIMEOUT_S)
        logger.error(
            "camera %s: analysis made no progress for %.1f s while frames arrived; restarting it",
            source.name,
            hang_timeout_s,
        )
        return False
    try:
        task.result()
    except Exception:  # supervisor loop: log, count, back off; other cameras go on
        health.failures += 1
        logger.exception("camera %s: analysis failed; restarting it", source.name)
        return False
    return True


async def _watch(
    task: asyncio.Task[CameraStats], pipe: Pipeline, source: LiveSource, hang_timeout_s: float
) -> bool:
    """Wait for ``task``; True when it hangs (frames decoded, none analysed)."""
    analysed = -1
    decoded = source.stats().frames
    since = time.monotonic()
    while True:
        done, _ = await asyncio.wait({task}, timeout=WATCH_EVERY_S)
        if done:
            return False
        now = time.monotonic()
        st = pipe.stats.get(source.name)
        now_analysed = st.frames if st else 0
        now_decoded = source.stats().frames
        if now_analysed != analysed or now_decoded == decoded:
            # Progress, or nothing to analyse (camera offline): not a hang.
            analysed, decoded, since = now_analysed, now_decoded, now
        elif now - since > hang_timeout_s:
            return True
