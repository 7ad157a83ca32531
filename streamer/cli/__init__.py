"""Command-line entry point: ``streamer <command> ...`` and ``python -m streamer``.

Each command lives in its own module with a ``register(subparsers)`` function that adds
an argparse sub-parser and sets ``func`` (a callable taking the parsed namespace and
returning the exit code). Errors the package raises on purpose (:class:`StreamerError`)
print one line and exit 1: no traceback for bad input.

Output errors are handled here once for every command: when stdout's reader goes away
(``streamer replay VIDEO | head -3``) the command ends quietly with exit code 141 (128 +
SIGPIPE, what a shell reports for ``seq 1000000 | head -1``); any other write error (a
full disk) prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from streamer import __version__
from streamer.errors import StreamerError

logger = logging.getLogger("streamer")

# The module under streamer.cli of each command (or command group). A command line that
# names one imports only its module (start-up); help and unknown commands import all.
COMMAND_MODULES = {
    "replay": "replay",
    "run": "run",
    "predict": "predict",
    "models": "models",
    "subscribe": "subscribe",
    "validate-config": "validate",
    "bench": "bench",
    "plot": "plot",
    "cluster": "cluster",
    "episodes": "episodes",
    "history": "history",
    "doctor": "doctor",
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (the top-level
    options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``argv``'s command (of every command when it names none we know)."""
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Real-time facial-affect stream analyzer (valence/arousal per face).",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="debug log output of streamer (-vv: of the libraries too)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = _command_of(sys.argv[1:] if argv is None else argv)
    modules = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else COMMAND_MODULES.values()
    for name in dict.fromkeys(modules):
        try:
            module = importlib.import_module(f"streamer.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"streamer.cli.{name}":
                continue  # command not built into this install
            raise
        module.register(sub)
    _global_flags_after_the_command(sub)
    return parser


def _global_flags_after_the_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``-v``/``-q`` after the command too (``streamer replay X -q``, as ``pip install
    -q``): every command's parser (nested ones too) takes them; :func:`main` adds them to
    the ones given before the command."""
    for parser in dict.fromkeys(sub.choices.values()):
        flags = parser.add_argument_group("global options (also before the command)")
        flags.add_argument(
            "-v",
            "--verbose",
            dest="verbose_after",
            action="count",
            default=0,
            help="debug log output of streamer (-vv: of the libraries too)",
        )
        flags.add_argument(
            "-q",
            "--quiet",
            dest="quiet_after",
            action="store_true",
            help="only warnings and errors (no progress bar)",
        )
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _global_flags_after_the_command(action)


def log_levels(verbose: int, quiet: bool) -> tuple[int, int]:
    """(root level, ``streamer`` level): info by default; ``-q`` warnings only; ``-v``
    debug for streamer's own loggers; ``-vv`` debug for every library too."""
    if quiet:
        return logging.WARNING, logging.WARNING
    if verbose >= 2:
        return logging.DEBUG, logging.DEBUG
    if verbose == 1:
        return logging.INFO, logging.DEBUG
    return logging.INFO, logging.INFO


# The log line when stderr is not a terminal (a service's journal, a container's log, a
# file): one line a record, a full timestamp, nothing wrapped to a width.
PLAIN_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
PLAIN_DATEFMT = "%Y-%m-%d %H:%M:%S"


class PlainHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Plain lines on whatever ``sys.stderr`` is when a record comes (a test may have
    swapped it since start-up; a live view of rich's proxies it, and the line goes to
    the file behind the proxy, as rich's own log handler's would). When the reader goes
    away, the command ends quietly with 141, as with a console."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATEFMT))

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        self.stream = getattr(stream, "rich_proxied_file", stream)
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            from streamer.cli.progress import reader_gone

            fileno = None
            with contextlib.suppress(OSError, ValueError, AttributeError):
                fileno = self.stream.fileno()
            reader_gone(fileno)
            return
        super().handleError(record)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr (stdout carries data: JSON lines): rich's columns on a terminal,
    plain timestamped lines otherwise. Plain lines also keep a service that runs for
    months clear of rich's per-record rendering and its caches."""
    level, own_level = log_levels(verbose, quiet)
    handler: logging.Handler
    if _stderr_is_terminal():
        # Built here, not at the first record: importing rich then would block the
        # event loop mid-run (an MQTT subscriber then stalled on its first subscription).
        from rich.logging import RichHandler

        from streamer.cli.progress import stderr_console

        handler = RichHandler(
            console=stderr_console(), show_path=False, rich_tracebacks=False, markup=False
        )
        handler.setFormatter(logging.Formatter("%(message)s", "[%X]"))
    else:
        handler = PlainHandler()
    logging.basicConfig(level=level, handlers=[handler])
    # Only -v sets streamer's own level; otherwise it inherits the root's (NOTSET).
    logger.setLevel(own_level if own_level != level else logging.NOTSET)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    args.quiet = args.quiet or getattr(args, "quiet_after", False)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.verbose, args.quiet)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return _quiet_stdout(EXIT_BROKEN_PIPE) if _output_broken() else code
    except StreamerError as err:
        print(f"error: {err}", file=sys.stderr)
        return _quiet_stdout(EXIT_ERROR)
    except KeyboardInterrupt:
        if _output_broken():  # a console's reader went away (streamer.cli.progress)
            return _quiet_stdout(EXIT_BROKEN_PIPE)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_stdout(EXIT_BROKEN_PIPE)
    except OSError as err:
        where = f"{err.filename}: " if err.filename else "output: "
        with contextlib.suppress(OSError):  # stderr may be gone too
            print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return _quiet_stdout(EXIT_ERROR)


def _output_broken() -> bool:
    from streamer.cli.progress import output_broken

    return output_broken()


def _quiet_stdout(code: int) -> int:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return code
