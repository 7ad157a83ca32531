"""Output errors on stdout: a closed pipe ends quietly (exit 141, like ``seq | head``), a
full disk is one error line and exit 1; never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.cli import EXIT_BROKEN_PIPE

STREAMER = [sys.executable, "-m", "streamer"]


def _read_lines_then_close(cmd: list[str], n: int) -> tuple[list[str], int, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    lines = [proc.stdout.readline() for _ in range(n)]
    proc.stdout.close()  # what `head -n` does once it has its lines
    err = proc.stderr.read()
    return lines, proc.wait(timeout=300), err


def _assert_quiet(err: str) -> None:
    assert "Traceback" not in err, err[-3000:]
    assert "Exception ignored" not in err, err[-3000:]
    assert "BrokenPipe" not in err, err[-3000:]


def test_replay_into_head_ends_quietly(store_path: Callable[[str], Path]) -> None:
    video = store_path("single_face.mp4")
    # --realtime keeps the run going after the reader has left.
    cmd = [*STREAMER, "replay", str(video), "--no-progress", "--realtime"]
    lines, code, err = _read_lines_then_close(cmd, 3)
    assert all(line.startswith("{") for line in lines)
    assert code == EXIT_BROKEN_PIPE == 141
    _assert_quiet(err)


def test_predict_into_head_ends_quietly(store_path: Callable[[str], Path]) -> None:
    image = store_path("multi_face.jpg")
    # Far more output than a pipe buffer holds, so the write after close must fail.
    cmd = [*STREAMER, "predict", "--crops", *[str(image)] * 1500]
    lines, code, err = _read_lines_then_close(cmd, 1)
    assert lines[0].startswith("{")
    assert code == EXIT_BROKEN_PIPE
    _assert_quiet(err)


@pytest.mark.parametrize("command", ["replay", "predict"])
def test_full_disk_on_stdout_is_one_error_line(
    command: str, store_path: Callable[[str], Path]
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full not present")
    if command == "replay":
        cmd = [*STREAMER, "replay", str(store_path("single_face.mp4")), "--no-progress"]
    else:
        cmd = [*STREAMER, "predict", "--crops", *[str(store_path("multi_face.jpg"))] * 3]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, check=False
        )
    assert proc.returncode == 1
    _assert_quiet(proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "No space left on device" in errors[0]


@pytest.mark.parametrize("extra", [[], ["--realtime"]])
def test_closed_stderr_ends_quietly_with_141(
    store_path: Callable[[str], Path], extra: list[str]
) -> None:
    """``streamer replay X 2>&1 >/dev/null | head -2``: the documented 141, as for stdout
    (rich's default would exit 1 and point stdout at /dev/null)."""
    video = store_path("single_face.mp4")
    proc = subprocess.Popen(
        [*STREAMER, "replay", str(video), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.stderr is not None
    lines = [proc.stderr.readline() for _ in range(2)]
    proc.stderr.close()  # what `head -2` does once it has its lines
    assert all(lines), lines
    assert proc.wait(timeout=300) == EXIT_BROKEN_PIPE == 141
