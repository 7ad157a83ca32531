"""``-v`` / ``-q``: what the CLI logs."""

from __future__ import annotations

import logging
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
