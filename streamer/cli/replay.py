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

from streamer.annotate import AnnotationRecorder, annotate_output, write_annotated
from streamer.cli.progress import frame_progress, stderr_console
from streamer.cli.tables import print_whole
from streamer.config import AppConfig, load_config, with_analysis_fps
from streamer.errors import ConfigError
from streamer.messages import Message, VASample
from streamer.output import OutputFile, check_outputs
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
        "--analysis-fps",
        type=float,
        metavar="N",
        help="analyse at most N frames per second of media time (the config's analysis.fps; "
        "default: every frame); the others are counted as skipped by rate",
    )
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
    p.add_argument(
        "--history",
        metavar="PATH",
        help="also keep the replay's episodes, descriptions, moods and VA in this history "
        "(a SQLite file, or a postgresql:// URL; see docs/history.md)",
    )
    p.add_argument(
        "--serve-linger",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="with --serve (implied): keep serving S seconds after the replay ends "
        "('inf': until Ctrl-C, which then ends the run normally); outputs are written "
        "when it stops",
    )
    p.set_defaults(func=cmd_replay)


def _seconds(text: str) -> float:
    """A non-negative number of seconds, or ``inf`` (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'inf', got {text!r}") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 or 'inf', got {text!r}")
    return value


def serve_config(cfg: AppConfig) -> AppConfig:
    """``cfg`` with the web sink enabled (its ``web:`` section, or the defaults)."""
    web = cfg.web.model_copy(update={"enabled": True}) if cfg.web else WebConfig()
    return cfg.model_copy(update={"web": web})


def history_config(cfg: AppConfig, target: str) -> AppConfig:
    """``cfg`` with its history at ``target`` (a SQLite path or a PostgreSQL URL); the
    config's other ``history`` settings are kept."""
    from streamer.history.config import HistoryConfig, is_database_url

    where = {"url": target} if is_database_url(target) else {"path": target}
    base = (
        cfg.history.model_dump(exclude={"path", "url"}, exclude_unset=True) if cfg.history else {}
    )
    try:
        history = HistoryConfig.model_validate({**base, **where})
    except ValueError as err:
        raise ConfigError(f"--history {target}: {_first_error(err)}") from err
    return cfg.model_copy(update={"history": history})


def _first_error(err: ValueError) -> str:
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        return str(err.errors()[0]["msg"])
    return str(err)


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else AppConfig()
    if args.analysis_fps is not None:
        cfg = with_analysis_fps(cfg, args.analysis_fps)
    if args.serve or args.serve_linger:
        cfg = serve_config(cfg)
    if args.history:
        cfg = history_config(cfg, args.history)
    annotate = checked_outputs(args)
    summary = Summarizer()
    recorder = AnnotationRecorder() if annotate is not None else None
    result = asyncio.run(_replay(cfg, args, summary, recorder, annotate))
    if not args.quiet:  # -q: only warnings and errors
        print_summary(stderr_console(), summary, result)
        print_history(stderr_console(), result)
    if result.report.clean:
        return 0
    return print_damage(stderr_console(), result.report, args.video, args.skip_corrupt)


def checked_outputs(args: argparse.Namespace) -> OutputFile | None:
    """Check every destination before any work (see :mod:`streamer.output`); returns the
    ``--annotate`` output, if any."""
    outputs = []
    if args.out is not None:
        outputs.append(OutputFile(args.out, flag="--out", inputs=[args.video]))
    annotate = None
    if args.annotate is not None:
        annotate = annotate_output(args.video, args.annotate)
        outputs.append(annotate)
    check_outputs(outputs)
    return annotate


def _is_va(msg: Message) -> bool:
    return isinstance(msg, VASample)


async def _replay(
    cfg: AppConfig,
    args: argparse.Namespace,
    summary: Summarizer,
    recorder: AnnotationRecorder | None,
    annotate: OutputFile | None,
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
        linger_s=args.serve_linger,
        max_pixels=args.max_pixels,
    )
    show = not (args.no_progress or args.quiet)

    async def write_video(result: ReplayResult) -> None:
        # before the JSON lines are committed: a failed video leaves neither file
        assert recorder is not None and annotate is not None
        replay_bar.finish(result)
        replay_bar.close()  # one bar at a time
        frames = result.stats.frames
        with FrameBar("annotate", show, frames) as bar:

            def on_frame(n: int) -> None:
                if n % 10 == 0 or n == frames:
                    bar.update(n)

            await asyncio.to_thread(
                write_annotated, args.video, annotate, recorder.overlays, on_frame=on_frame
            )

    with FrameBar("replay", show) as replay_bar:
        result = await run_replay(
            cfg,
            args.video,
            options,
            readers=readers,
            progress=replay_bar.update if show else None,
            finish=write_video if annotate is not None else None,
        )
        replay_bar.finish(result)
        return result


def analysis_fps(frames: int, seconds: float) -> str:
    """The one fps of ``replay``'s bar and summary: frames analysed per second of the
    analysis itself (from its first frame, the models loaded; model loading is not in
    it), rounded to a whole number."""
    return f"{frames / max(seconds, 1e-6):.0f}"


BAR_DELAY_S = 0.5  # a bar is drawn only once the work has lasted this long (seconds)


class FrameBar:
    """A bar of frames done, fps and elapsed time on stderr, or nothing at all: not for
    work that ends within :data:`BAR_DELAY_S` (a short clip: no bar to draw and clear,
    and rich.progress is not even imported), nor when not ``show``. Its fps counts from
    the first update (the start of the analysis: :func:`analysis_fps`)."""

    def __init__(self, what: str, show: bool, total: int | None = None) -> None:
        self.what = what
        self.show = show
        self.total = total
        self._t0: float | None = None  # the first update: the analysis started
        self._started = time.perf_counter()
        self._closed = False
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> FrameBar:
        self._started = time.perf_counter()
        return self

    def _open(self, now: float) -> bool:
        """Draw the bar from now on, once the work has lasted :data:`BAR_DELAY_S`."""
        if not self.show or self._closed or now - self._started < BAR_DELAY_S:
            return False
        self._progress = frame_progress(stderr_console(), True)
        self._progress.__enter__()
        self._task = self._progress.add_task(self.what, total=self.total or None, fps="-")
        return True

    def update(self, done: int, total: int | None = None, *, seconds: float | None = None) -> None:
        """``done`` frames so far (of ``total``); ``seconds`` of work (default: since the
        first update)."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        if self._progress is None and not self._open(now):
            return
        assert self._progress is not None and self._task is not None
        fps = analysis_fps(done, seconds if seconds is not None else now - self._t0)
        if total:
            self._progress.update(self._task, total=total)
        self._progress.update(self._task, completed=done, fps=fps)

    def finish(self, result: ReplayResult) -> None:
        """The final state: the replay's own frame count and analysis time (the summary's
        numbers)."""
        self.update(result.stats.frames, seconds=result.run_s)

    def close(self) -> None:
        """Stop drawing (the bar stays on screen as it was); later updates do nothing."""
        self._closed = True
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.__exit__(None, None, None)

    def __exit__(self, *exc: object) -> None:
        self.close()


def print_history(console: Console, result: ReplayResult) -> None:
    """The history's line of the summary: rows written, rows dropped and why."""
    sink = result.sinks.get("history")
    if sink is None:  # no history: sqlalchemy is never imported (start-up)
        return
    from streamer.history.sink import HistorySink

    if not isinstance(sink, HistorySink):
        return
    s = sink.summary()
    written = ", ".join(f"{n} {kind}" for kind, n in sorted(s["written"].items())) or "nothing"
    dropped = sum(s["dropped"].values())
    line = f"history {s['database']} (run {s['run']}): written {written}"
    if dropped:
        why = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items()))
        line += f"; {dropped} row(s) dropped ({why})"
    console.print(line, markup=False, highlight=False)


def print_summary(console: Console, summary: Summarizer, result: ReplayResult) -> None:
    from rich.table import Table

    stats = result.stats
    by_rate = f" (+{stats.skipped_by_rate} skipped by rate)" if stats.skipped_by_rate else ""
    table = Table(
        title=f"{stats.frames} frames{by_rate}, {stats.faces} faces: analysed in "
        f"{result.run_s:.2f} s ({analysis_fps(stats.frames, result.run_s)} fps), "
        f"{result.wall_s:.2f} s with model loading"
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
    print_whole(console, table)
