"""The replay runtime: every frame of a recorded file through the pipeline, deterministic.

One function, :func:`run_replay`, wires a replay for every caller: ``streamer replay``,
``replay --annotate`` and ``--serve``, and the benches (``bench replay``, ``crowd``,
``smoothing``, the annotate figures). The file is opened first (a bad file fails
before any model loads or any output is made), the pipeline is built, and the
composition (JSONL, the config's sinks) runs around the analysis of the file's frames.

Callers that need the messages themselves (the replay's summary table, the annotated
video's recorder, a bench collecting VA) pass :class:`BusReader` objects: each gets a
lossless subscription made before the first frame, so it sees every message it accepts.

    result = await run_replay(cfg, Path("clip.mp4"), ReplayOptions(out=Path("va.jsonl")))
    result.stats.frames, result.report.clean
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.bus import Subscription
from streamer.compose import Composition, build_pipeline
from streamer.config import AppConfig
from streamer.lifecycle import cancel_and_wait
from streamer.messages import Message
from streamer.pipeline import CameraStats, first_error
from streamer.sinks import Sink, SinkFactory, SinkOptions
from streamer.sources.config import MAX_PIXELS
from streamer.sources.file import FileReport, FileSource

if TYPE_CHECKING:
    from streamer.affect.models import VAModel
    from streamer.store import ArtifactStore

logger = logging.getLogger(__name__)

READER_QUEUE = 4096  # messages queued per bus reader (lossless: the replay waits)
PROGRESS_EVERY_S = 0.1  # how often a progress callback is called (s)


@dataclass(frozen=True)
class BusReader:
    """A reader of a replay's messages (lossless: it sees every message it accepts).

    Attributes:
        name: its subscription's name (logs, metrics).
        consume: reads the subscription until the bus closes.
        accept: which messages it wants (None: all).
    """

    name: str
    consume: Callable[[Subscription], Coroutine[Any, Any, None]]
    accept: Callable[[Message], bool] | None = None


@dataclass(frozen=True)
class ReplayOptions:
    """How a file is replayed and where its records go.

    Attributes:
        camera: the camera name in the outputs (default: the file's stem).
        realtime: pace frames at the video's rate.
        skip_corrupt: accept damage (a truncated file keeps what decoded).
        out: JSON lines to this file (atomically).
        stdout_jsonl: JSON lines to stdout when there is no ``out``.
        linger_s: the dashboard (``--serve``) keeps serving this long after the end
            (``inf``: until SIGINT/SIGTERM); the outputs are written when it stops.
        skip_nonref: with an analysis rate, leave non-reference pictures off the grid
            undecoded (``skip_frame``; the output is the same either way).
        max_pixels: frames larger than this are refused (announced) or skipped.
    """

    camera: str | None = None
    realtime: bool = False
    skip_corrupt: bool = False
    out: Path | None = None
    stdout_jsonl: bool = False
    linger_s: float = 0.0
    skip_nonref: bool = True
    max_pixels: int = MAX_PIXELS


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did.

    Attributes:
        stats: the camera's analysis counters.
        report: how the file decoded (damage, truncation).
        model: the VA model's name.
        video_fps: the file's frame rate (0.0 when unknown).
        frame_count: frames the container announces (0: unknown).
        wall_s: seconds from opening the file to the end (models loading included).
        run_s: seconds of the analysis itself (the composition's run, models loaded).
        run_cpu_s: CPU seconds of the process during ``run_s`` (every thread).
        sinks: the sinks the composition entered, by name (they are closed).
    """

    stats: CameraStats
    report: FileReport
    model: str
    video_fps: float
    frame_count: int
    wall_s: float
    run_s: float
    run_cpu_s: float
    sinks: Mapping[str, Sink]


def process_cpu_s() -> float:
    """CPU seconds of this process so far (every thread, user and system)."""
    t = os.times()
    return t.user + t.system


async def run_replay(
    cfg: AppConfig,
    video: Path,
    options: ReplayOptions | None = None,
    *,
    readers: Sequence[BusReader] = (),
    store: ArtifactStore | None = None,
    model: VAModel | None = None,
    overrides: Mapping[str, SinkFactory] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    finish: Callable[[ReplayResult], Awaitable[None]] | None = None,
) -> ReplayResult:
    """Replay ``video`` through the pipeline of ``cfg`` (see the module docstring).

    Args:
        cfg: the app config.
        video: the file.
        options: camera name, pacing, damage policy, JSONL output.
        readers: extra readers of the run's messages.
        store: the model store (default: :func:`streamer.store.default_store`).
        model: a VA model to use instead of the configured one (benches).
        overrides: sink factories to use instead of the registered ones, by name.
        progress: called about every 0.1 s with the frames analysed so far and the
            frames the file announces (None: unknown), and once at the end.
        finish: a step after the analysis (the annotated video) that the JSON lines
            file waits for: it is committed only when ``finish`` returns, and dropped
            when it raises.

    Raises:
        MediaError: the file cannot be opened, or is truncated without ``skip_corrupt``.
        ModelMissingError: a model is not in the store.
    """
    opts = options or ReplayOptions()
    camera = opts.camera or video.stem
    source = FileSource(
        video,
        camera,
        realtime=opts.realtime,
        skip_corrupt=opts.skip_corrupt,
        analysis_fps=cfg.analysis_fps(camera),
        skip_nonref=opts.skip_nonref,
        max_pixels=opts.max_pixels,
    )
    t0 = time.perf_counter()
    async with source:
        pipe = build_pipeline(cfg, store, model=model)
        logger.info("replaying %s with model %s", video, pipe.model_name)
        subs = [
            (r, pipe.bus.subscribe(r.name, READER_QUEUE, lossless=True, accept=r.accept))
            for r in readers
        ]
        sink_options = SinkOptions(
            out=opts.out,
            stdout_jsonl=opts.stdout_jsonl,
            replay=True,
            linger_s=opts.linger_s,
            hold_out=finish is not None,
        )
        run = Composition(pipe, sink_options, overrides=overrides)
        run.add_source(source.camera, source)
        t_run, c_run = time.perf_counter(), process_cpu_s()
        try:
            # The readers read the bus until the composition closes it.
            async with asyncio.TaskGroup() as tg, run:
                for reader, sub in subs:
                    tg.create_task(reader.consume(sub), name=f"reader-{reader.name}")
                analysis = pipe.run_camera(
                    source.camera, source, lossless=True, decode_stats=source.decode_stats
                )
                stats = await _with_progress(
                    analysis, lambda: pipe.stats, source.camera, source.frame_count, progress
                )
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        run_s, run_cpu_s = time.perf_counter() - t_run, process_cpu_s() - c_run
    result = ReplayResult(
        stats=stats,
        report=source.report,
        model=pipe.model_name,
        video_fps=source.fps,
        frame_count=source.frame_count,
        wall_s=time.perf_counter() - t0,
        run_s=run_s,
        run_cpu_s=run_cpu_s,
        sinks=dict(run.sinks),
    )
    if finish is not None:
        try:
            await finish(result)
        except BaseException:
            run.abort_output()
            raise
        run.commit_output()
    return result


async def _with_progress(
    analysis: Awaitable[CameraStats],
    stats: Callable[[], Mapping[str, CameraStats]],
    camera: str,
    total: int,
    progress: Callable[[int, int | None], None] | None,
) -> CameraStats:
    if progress is None:
        return await analysis

    async def watch() -> None:
        while True:
            st = stats().get(camera)
            progress(st.frames if st is not None else 0, total or None)
            await asyncio.sleep(PROGRESS_EVERY_S)

    watcher = asyncio.create_task(watch(), name="replay-progress")
    try:
        result = await analysis
    finally:
        await cancel_and_wait(watcher)
    progress(result.frames, total or None)
    return result
