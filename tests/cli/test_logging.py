"""``-v`` / ``-q``: what the CLI logs."""

from __future__ import annotations

import contextlib
import logging
import os
import pty
import re
import subprocess
import sys
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
    try:
        proc = _validate_debug(long_config, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        chunks = []
        with contextlib.suppress(OSError):  # EIO: the child closed the terminal
            while chunk := os.read(leader, 4096):
                chunks.append(chunk)
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\[\d\d:\d\d:\d\d\]", screen) and "DEBUG" in screen, screen
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", screen), screen
