"""``streamer run --config FILE [--out FILE.jsonl]``: analyse live cameras until stopped.

Every camera of the config gets a :class:`~streamer.sources.live.LiveSource` (its own
decode thread, watchdog and reconnects) and a supervised analysis task on the shared
:class:`~streamer.pipeline.Pipeline`; one camera's failure never stops another.
SIGINT/SIGTERM stop everything: sources close (their statuses go to ``stopped``), the
analysis drains, sinks flush and MQTT disconnects cleanly, within about 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.backoff import Backoff, BackoffPolicy
from streamer.bus import EventBus
from streamer.compose import Composition, SinkOptions, build_pipeline
from streamer.config import AppConfig, load_config
from streamer.errors import ConfigError
from streamer.pipeline import CameraStats, Pipeline
from streamer.smoothing import kalman_filter_class
from streamer.sources.live import LiveSource, SourceStats, build_sources
from streamer.store import ArtifactStore
from streamer.supervise import RestartGuard, RestartPolicy

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 1.5  # after the sources closed, how long analysis may take to drain (s)
WATCH_EVERY_S = 0.5  # how often the analysis watchdog looks (s)
EXIT_GRACE_S = 1.0  # how long stuck worker threads get before the process exits anyway (s)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="analyse live cameras (RTSP, HTTP, webcams) from a YAML config until stopped",
        description="Run the live pipeline over every camera in the config: faces, tracks, "
        "valence/arousal, smoothing, and MQTT / LLM when configured. Stops cleanly on "
        "SIGINT or SIGTERM.",
    )
    p.add_argument("--config", type=Path, required=True, help="YAML config with `cameras:`")
    p.add_argument(
        "--out", type=Path, help="also write JSON lines here (replay's records plus wall_time)"
    )
    p.add_argument(
        "--camera", action="append", metavar="NAME", help="run only this camera (repeatable)"
    )
    p.add_argument(
        "--duration-s", type=float, help="stop after this many seconds (default: run until stopped)"
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run each camera as an actor on this Ray cluster: auto, ray://host:10001 or "
        "host:6379 (docs/cluster.md); also `cluster:` in the config",
    )
    p.set_defaults(func=cmd_run)


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


def cmd_run(args: argparse.Namespace) -> int:
    cfg = select_cameras(load_config(args.config), args.camera, str(args.config))
    for camera in cfg.cameras:
        camera.resolved_url()  # a missing ${VAR} fails here, before any camera opens
    if args.duration_s is not None and args.duration_s <= 0:
        raise ConfigError(f"--duration-s must be > 0, got {args.duration_s}")
    if getattr(args, "cluster", None) is not None or cfg.cluster is not None:
        from streamer.cluster.driver import cmd_run_cluster

        return cmd_run_cluster(cfg, args)
    result = run_until_stopped(cfg, out=args.out, duration_s=args.duration_s)
    return report_run(result)


def report_run(result: RunResult) -> int:
    """Log what a live run did; exits the process at once if stage threads are stuck.

    Returns:
        The exit code (0).
    """
    for name, st in sorted(result.sources.items()):
        cam = result.cameras.get(name)
        logger.info(
            "camera %s: %d frames decoded, %d analysed, %d skipped, %d reconnects, "
            "%d stalls, %d corrupt",
            name,
            st.frames,
            cam.frames if cam else 0,
            st.skipped,
            st.reconnects,
            st.stalls,
            st.corrupt,
        )
    if result.stop_s is not None:
        logger.info("stopped in %.2f s", result.stop_s)
    if result.leftover_threads:
        logger.warning("threads still running at exit: %s", ", ".join(result.leftover_threads))
    stuck = _stuck_threads(EXIT_GRACE_S)
    if stuck:
        # A stage thread blocked in native code (a hung detector call, say) would make
        # the interpreter wait for it forever at exit: the stop bound wins.
        logger.error(
            "threads stuck at exit (%s); exiting without waiting for them", ", ".join(stuck)
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def run_until_stopped(cfg: AppConfig, **kwargs: Any) -> RunResult:
    """:func:`run_live` in a fresh event loop that never waits for stuck worker threads.

    ``asyncio.run`` joins the default executor's threads when it ends; a thread hung in
    a stage would then block the exit forever, so the loop is closed without that join.
    """
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(run_live(cfg, **kwargs))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()


def _stuck_threads(grace_s: float) -> list[str]:
    """Non-daemon threads still alive after ``grace_s`` (they would block the exit)."""
    deadline = time.monotonic() + grace_s
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join(max(0.0, deadline - time.monotonic()))
    return [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]


@dataclass
class RunResult:
    """What a live run did, per camera."""

    sources: dict[str, SourceStats] = field(default_factory=dict)
    cameras: dict[str, CameraStats] = field(default_factory=dict)
    analysis: dict[str, AnalysisHealth] = field(default_factory=dict)
    stop_s: float | None = None  # seconds from the stop request to the end of the run
    leftover_threads: list[str] = field(default_factory=list)


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
    mqtt_options: dict[str, Any] | None = None,
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
        mqtt_options: extra MqttPublisher keywords (cluster mode).

    Returns:
        The counters of every source and camera analysis.
    """
    stop = stop or asyncio.Event()
    threads_before = set(threading.enumerate())
    # filterpy (the VA smoothing; about 1 s to import: scipy) loads before any camera
    # opens, like the models, so no camera's first results wait for it.
    kalman_filter_class()
    if pipeline is None:
        # Models load before any camera opens: a missing model fails fast and clearly.
        bus = EventBus(lossless_wait_s=cfg.output.live_lossless_wait_s)
        pipeline = build_pipeline(cfg, store, bus=bus)
    result = RunResult()
    with _signals(stop, handle_signals):
        sinks = SinkOptions(out=out, atomic_out=False, mqtt_options=mqtt_options or {})
        async with Composition(pipeline, sinks) as run:
            sources = build_sources(cfg.cameras, run.bus)
            t_stop = await _run_cameras(
                run.pipe, sources, stop, duration_s, result, policy or RestartPolicy()
            )
            result.sources = {src.name: src.stats() for src in sources}
            result.cameras = dict(run.pipe.stats)
    result.stop_s = time.monotonic() - t_stop
    await asyncio.sleep(0)
    result.leftover_threads = [
        t.name
        for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and not t.name.startswith("asyncio_")
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


@contextlib.contextmanager
def _signals(stop: asyncio.Event, enabled: bool) -> Any:
    """SIGINT/SIGTERM set ``stop`` (main thread only); a second one is reported."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if enabled and threading.current_thread() is threading.main_thread():

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set():
                logger.warning("%s again: already stopping", sig.name)
                return
            logger.info("%s: stopping", sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
