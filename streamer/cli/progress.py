"""The frame progress bar of ``replay`` and ``--annotate`` (rich.progress loads on use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


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
