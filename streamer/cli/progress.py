"""The stderr console and the frame progress bar of ``replay`` and ``--annotate`` (the
bar's part of rich loads only when a bar is drawn)."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


_CONSOLE_LOCK = threading.Lock()  # callers may be on any thread


@functools.cache
def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def stderr_console() -> Console:
    """The CLI's rich console on stderr (stdout carries data: JSON lines), made on first
    use: one for the process, so log lines and the progress bar share it."""
    with _CONSOLE_LOCK:
        return _stderr_console()


def frame_progress(console: Console, enabled: bool) -> Progress:
    """A bar of frames done, fps and elapsed time on ``console`` (hidden unless
    ``enabled``); its tasks take a ``fps`` field."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} frames"),
        TextColumn("{task.fields[fps]} fps"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
