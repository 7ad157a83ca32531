"""``streamer replay VIDEO``: analyse a recorded file, every frame, deterministic output."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

from streamer.annotate import AnnotationRecorder, check_output, write_annotated
from streamer.cli.progress import frame_progress, stderr_console
from streamer.config import AppConfig, load_config
from streamer.messages import Message, VASample
from streamer.pipeline import CameraStats
from streamer.runtime.replay import BusReader, ReplayOptions, ReplayResult, run_replay
from streamer.sources.config import MAX_PIXELS
from streamer.sources.file import EXIT_CORRUPT, print_damage
from streamer.summary import Summarizer
from streamer.web.config import WebConfig


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
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"frames larger than N pixels (width x height) are refused (default {MAX_PIXELS:,}, "
        "8192x8192; the same cap streamer predict applies to images)",
    )
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


def serve_config(cfg: AppConfig) -> AppConfig:
    """``cfg`` with the web sink enabled (its ``web:`` section, or the defaults)."""
    web = cfg.web.model_copy(update={"enabled": True}) if cfg.web else WebConfig()
    return cfg.model_copy(update={"web": web})


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else AppConfig()
    if args.serve:
        cfg = serve_config(cfg)
    if args.annotate is not None:
        check_output(args.video, args.annotate)
    summary = Summarizer()
    recorder = AnnotationRecorder() if args.annotate is not None else None
    result = asyncio.run(_replay(cfg, args, summary, recorder))
    if not args.quiet:  # -q: only warnings and errors
        print_summary(stderr_console(), summary, result.stats, result.wall_s)
    if result.report.clean:
        return 0
    return print_damage(stderr_console(), result.report, args.video, args.skip_corrupt)


def _is_va(msg: Message) -> bool:
    return isinstance(msg, VASample)


async def _replay(
    cfg: AppConfig,
    args: argparse.Namespace,
    summary: Summarizer,
    recorder: AnnotationRecorder | None,
) -> ReplayResult:
    readers = [BusReader("summary", summary.consume, accept=_is_va)]
    if recorder is not None:
        readers.append(BusReader("annotate", recorder.consume, accept=recorder.accept))
    options = ReplayOptions(
        camera=args.camera,
        realtime=args.realtime,
        skip_corrupt=args.skip_corrupt,
        out=args.out,
        stdout_jsonl=args.out is None,
        max_pixels=args.max_pixels,
    )
    show = not (args.no_progress or args.quiet)
    with FrameBar("replay", show) as bar:
        result = await run_replay(
            cfg, args.video, options, readers=readers, progress=bar.update if show else None
        )
    if recorder is not None:
        frames = result.stats.frames
        with FrameBar("annotate", show, frames) as bar:

            def on_frame(n: int) -> None:
                if n % 10 == 0 or n == frames:
                    bar.update(n)

            await asyncio.to_thread(
                write_annotated, args.video, args.annotate, recorder.overlays, on_frame=on_frame
            )
    return result


class FrameBar:
    """A bar of frames done, fps and elapsed time on stderr, or nothing at all (then
    rich.progress is not even imported)."""

    def __init__(self, what: str, show: bool, total: int | None = None) -> None:
        self.what = what
        self.show = show
        self.total = total
        self._t0 = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> FrameBar:
        if self.show:
            self._progress = frame_progress(stderr_console(), True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.what, total=self.total or None, fps="-")
        return self

    def update(self, done: int, total: int | None = None) -> None:
        if self._progress is None or self._task is None:
            return
        fps = f"{done / max(time.perf_counter() - self._t0, 1e-6):.0f}"
        if total:
            self._progress.update(self._task, total=total)
        self._progress.update(self._task, completed=done, fps=fps)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)


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
