"""Helpers of ``streamer replay``: ``--annotate`` (second pass over the file) and ``--serve``."""

from __future__ import annotations

import argparse
import asyncio
import time

from streamer.annotate import AnnotationRecorder, write_annotated
from streamer.cli.progress import frame_progress, stderr_console
from streamer.config import AppConfig
from streamer.web.config import WebConfig


def serve_config(cfg: AppConfig) -> AppConfig:
    """``cfg`` with the web sink enabled (its ``web:`` section, or the defaults)."""
    web = cfg.web.model_copy(update={"enabled": True}) if cfg.web else WebConfig()
    return cfg.model_copy(update={"web": web})


async def annotate(args: argparse.Namespace, recorder: AnnotationRecorder, frames: int) -> None:
    """Write ``args.annotate`` from ``args.video`` and what ``recorder`` saw, with progress."""
    progress = frame_progress(stderr_console(), not args.no_progress)
    t0 = time.perf_counter()
    with progress:
        task = progress.add_task("annotate", total=frames or None, fps="-")

        def on_frame(n: int) -> None:
            if n % 10 == 0 or n == frames:
                fps = f"{n / max(time.perf_counter() - t0, 1e-6):.0f}"
                progress.update(task, completed=n, fps=fps)

        await asyncio.to_thread(
            write_annotated,
            args.video,
            args.annotate,
            recorder.overlays,
            on_frame=on_frame,
        )
