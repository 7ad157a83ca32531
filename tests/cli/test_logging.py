"""``-v`` / ``-q``: what the CLI logs."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.cli import log_levels


@pytest.mark.parametrize(
    ("verbose", "quiet", "root", "own"),
    [
        (0, False, logging.INFO, logging.INFO),
        (1, False, logging.INFO, logging.DEBUG),
        (2, False, logging.DEBUG, logging.DEBUG),
        (3, False, logging.DEBUG, logging.DEBUG),
        (0, True, logging.WARNING, logging.WARNING),
    ],
)
def test_log_levels(verbose: int, quiet: bool, root: int, own: int) -> None:
    assert log_levels(verbose, quiet) == (root, own)


@pytest.mark.parametrize(
    ("before", "after", "debug_shown"),
    [([], [], False), (["-v"], [], True), ([], ["-v"], True), ([], ["--verbose"], True)],
)
def test_v_shows_debug_lines(
    tmp_path: Path, before: list[str], after: list[str], debug_shown: bool
) -> None:
    """Before or after the command (``streamer validate-config F -v``, as ``pip install
    -q``)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras:\n  - {name: door, url: 'rtsp://u:Secret7@127.0.0.1/x'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", *before, "validate-config", str(cfg), *after],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok (1 camera(s))" in proc.stdout
    assert ("cameras: door; sections:" in proc.stderr) is debug_shown
    assert "Secret7" not in proc.stderr


def _validate_debug(cfg: Path, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", "-v", "validate-config", str(cfg)],
        env={"COLUMNS": "40", "PATH": "/usr/bin:/bin", "TERM": "xterm"},
        stdout=stdout,
        stderr=stderr,
    )


@pytest.fixture
def long_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    names = ", ".join(f"{{name: camera-with-a-long-name-{i}, url: /v{i}.mp4}}" for i in range(3))
    cfg.write_text(f"cameras: [{names}]\n")
    return cfg


def test_logs_to_a_pipe_are_plain_lines(long_config: Path) -> None:
    """A service's log (journal, container log, file) gets one line a record with a full
    timestamp, the level and the logger: not wrapped to COLUMNS, no rich columns."""
    proc = _validate_debug(long_config, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = err.decode().splitlines()
    line = next(x for x in lines if "cameras:" in x)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} DEBUG streamer\.cli\.validate: "
        r".*cameras: camera-with-a-long-name-0, camera-with-a-long-name-1, "
        r"camera-with-a-long-name-2; sections: .*",
        line,
    ), lines


def test_logs_to_a_terminal_keep_rich_columns(long_config: Path) -> None:
    """On a terminal the lines stay rich's: time, level and message in columns (wrapped
    to the terminal's width)."""
    leader, follower = pty.openpty()
    proc = _validate_debug(long_config, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    try:
        deadline = time.monotonic() + 120
        with contextlib.suppress(OSError):  # EIO: the child closed the terminal
            while time.monotonic() < deadline:
                if not select.select([leader], [], [], 1.0)[0]:
                    continue
                if not (chunk := os.read(leader, 4096)):
                    break
                chunks.append(chunk)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait(timeout=30)
        os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\[\d\d:\d\d:\d\d\]", screen) and "DEBUG" in screen, screen
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", screen), screen


def test_plain_lines_under_a_live_view_go_to_the_file_behind_its_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``subscribe``'s live view (rich) proxies sys.stderr to draw log lines above it on
    the terminal; with stderr a file, the lines go to the file, not onto the view."""
    from rich.console import Console
    from rich.file_proxy import FileProxy

    from streamer.cli import PlainHandler

    screen, log_file = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", FileProxy(Console(file=screen), log_file))
    record = logging.makeLogRecord(
        {"name": "streamer.test", "msg": "hello", "levelname": "INFO", "levelno": logging.INFO}
    )
    PlainHandler().handle(record)
    assert log_file.getvalue().endswith(" INFO streamer.test: hello\n")
    assert screen.getvalue() == ""


# Logs until stopped: it ends only through the closed reader (or the test's kill).
LOGS_ONLY = """
import itertools, logging, sys
from streamer.cli import setup_logging
from streamer.cli.progress import output_broken

setup_logging(0, False)
log = logging.getLogger("streamer.test")
try:
    for i in itertools.count():
        log.info("line %d", i)
except KeyboardInterrupt:
    sys.exit(141 if output_broken() else 1)
"""


def test_a_closed_log_reader_ends_the_command_with_141() -> None:
    """``streamer run ... 2>&1 >/dev/null | head -1``: when the reader of plain log lines
    goes away, the command ends quietly with 141, as with a console (not logging's
    "--- Logging error ---" for every record, running on)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LOGS_ONLY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stderr is not None
        assert b"streamer.test: line 0" in proc.stderr.readline()
        proc.stderr.close()
        assert proc.wait(timeout=60) == 141
    finally:
        proc.kill()
        proc.wait(timeout=30)
