"""The CLI's consoles and the frame progress bar of ``replay`` and ``--annotate`` (the
bar's part of rich loads only when a bar is drawn).

A console whose reader went away (``streamer replay X 2>&1 >/dev/null | head -2``,
``streamer episodes F | head -1``) ends the command as a closed stdout does: quietly,
exit code 141. Rich's own default would exit with 1 and point *stdout* at /dev/null
even for the stderr console.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


_CONSOLE_LOCK = threading.Lock()  # callers may be on any thread
_BROKEN = threading.Event()  # a console's reader went away


def output_broken() -> bool:
    """Whether a console's reader went away (the command then ends with 141)."""
    return _BROKEN.is_set()


def console(**kwargs: Any) -> Console:
    """A rich console (keywords as rich's) that ends the command quietly, exit code 141,
    when its reader goes away."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True  # nothing more is written by this console
            fileno = None
            with contextlib.suppress(OSError, ValueError, AttributeError):
                fileno = self.file.fileno()
            reader_gone(fileno)

    return _Console(**kwargs)


def reader_gone(fileno: int | None) -> None:
    """A stream's reader went away: the process's later writes to ``fileno`` vanish, and
    the command ends quietly with 141 (a console's, or the plain log handler's)."""
    if fileno is not None:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fileno)
            os.close(devnull)
    if not _BROKEN.is_set():
        _BROKEN.set()
        # Whichever thread wrote (a log line, the bar's refresh thread), and whatever
        # catches the error there (logging does): the main thread stops the command as
        # Ctrl-C would, and the CLI ends it with 141.
        _thread.interrupt_main()


@functools.cache
def _stderr_console() -> Console:
    return console(stderr=True)


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
