"""``streamer replay VIDEO``: analyse a recorded file, every frame, deterministic output."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

from streamer.annotate import AnnotationRecorder, check_output
from streamer.cli.annotate_run import annotate, serve_config
from streamer.cli.progress import frame_progress, stderr_console
from streamer.compose import Composition, SinkOptions, build_pipeline
from streamer.config import AppConfig, load_config
from streamer.lifecycle import cancel_and_wait
from streamer.messages import VASample
from streamer.pipeline import CameraStats, Pipeline, first_error
from streamer.sources.file import EXIT_CORRUPT, FileReport, FileSource, print_damage
from streamer.store import default_store
from streamer.summary import Summarizer

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="analyse a video file: valence/arousal per face per frame (JSON lines)",
        description="Analyse every frame of a recorded video. Writes one JSON object per "
        "face per frame to --out (or stdout), a progress bar and a per-track summary "
        "to stderr.",
        epilog="Exit codes: 0 every frame decoded clean; 1 error (nothing written); "
        f"{EXIT_CORRUPT} finished, but corrupt frames were skipped (the summary and the log "
        "say how many and where; --skip-corrupt accepts them: exit 0).",
    )
    p.add_argument("video", type=Path, help="video file (mp4, mov, mkv, ...)")
    p.add_argument("--out", type=Path, help="write JSON lines here (atomically) instead of stdout")
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--camera", help="camera name in the output (default: the file's stem)")
    p.add_argument("--realtime", action="store_true", help="pace frames at the video's rate")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="accept damage: exit 0 although corrupt frames were skipped, and keep what "
        "decoded from a truncated file",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--annotate",
        type=Path,
        metavar="OUT.mp4",
        help="also write the video with boxes, track ids, VA bars and descriptions (H.264)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="serve the live dashboard and /metrics while the replay runs (config `web:`)",
    )
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else AppConfig()
    if getattr(args, "serve", False):
        cfg = serve_config(cfg)
    if getattr(args, "annotate", None) is not None:
        check_output(args.video, args.annotate)
    summary, stats, wall_s, report = asyncio.run(replay(cfg, args))
    if not getattr(args, "quiet", False):  # -q: only warnings and errors
        print_summary(stderr_console(), summary, stats, wall_s)
    if report.clean:
        return 0
    return print_damage(stderr_console(), report, args.video, args.skip_corrupt)


async def replay(
    cfg: AppConfig, args: argparse.Namespace
) -> tuple[Summarizer, CameraStats, float, FileReport]:
    source = FileSource(
        args.video, args.camera, realtime=args.realtime, skip_corrupt=args.skip_corrupt
    )
    summary = Summarizer()
    t0 = time.perf_counter()
    async with source:
        pipe = build_pipeline(cfg, default_store())
        logger.info("replaying %s with model %s", args.video, pipe.model_name)
        sub = pipe.bus.subscribe(
            "summary", maxsize=4096, lossless=True, accept=lambda m: isinstance(m, VASample)
        )
        recorder = AnnotationRecorder(pipe.bus) if getattr(args, "annotate", None) else None
        sinks = SinkOptions(out=args.out, stdout_jsonl=args.out is None, replay=True)
        try:
            # The summary and the recorder read the bus until the composition closes it.
            async with asyncio.TaskGroup() as tg, Composition(pipe, sinks):
                tg.create_task(summary.consume(sub), name="summary")
                if recorder is not None:
                    tg.create_task(recorder.consume(), name="annotation-recorder")
                stats = await _run_with_progress(args, pipe, source, t0)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
    if recorder is not None:
        await annotate(args, recorder, stats.frames)
    return summary, stats, time.perf_counter() - t0, source.report


async def _run_with_progress(
    args: argparse.Namespace, pipe: Pipeline, source: FileSource, t0: float
) -> CameraStats:
    run = functools.partial(
        pipe.run_camera, source.camera, source, lossless=True, decode_stats=source.counters
    )
    if args.no_progress or getattr(args, "quiet", False):
        return await run()  # no bar: rich.progress is not even imported
    with frame_progress(stderr_console(), True) as progress:
        task = progress.add_task("replay", total=source.frame_count or None, fps="-")
        watcher = asyncio.create_task(_watch(progress, task, pipe, source.camera, t0))
        try:
            stats = await run()
        finally:
            await cancel_and_wait(watcher)
        progress.update(task, completed=stats.frames)
    return stats


async def _watch(progress: Progress, task: TaskID, pipe: Pipeline, camera: str, t0: float) -> None:
    while True:
        st = pipe.stats.get(camera)
        if st is not None:
            fps = st.frames / max(time.perf_counter() - t0, 1e-6)
            progress.update(task, completed=st.frames, fps=f"{fps:.0f}")
        await asyncio.sleep(0.1)


def print_summary(console: Console, summary: Summarizer, stats: CameraStats, wall_s: float) -> None:
    from rich.table import Table

    table = Table(
        title=f"{stats.frames} frames, {stats.faces} faces, {wall_s:.2f} s "
        f"({stats.frames / max(wall_s, 1e-9):.0f} fps)"
    )
    for col in (
        "camera",
        "track",
        "from s",
        "duration s",
        "mean valence",
        "mean arousal",
        "dominant quadrant",
    ):
        table.add_column(col)
    for (camera, track_id), s in summary.tracks.items():
        table.add_row(
            camera,
            str(track_id),
            f"{s.first_t:.2f}",
            f"{s.span_s:.2f}",
            f"{s.mean_valence:+.3f}",
            f"{s.mean_arousal:+.3f}",
            s.dominant_quadrant,
        )
    if not summary.tracks:
        table.caption = "no face tracked"
    console.print(table)
