"""Fixtures of the web tests: real replays, a real RTSP camera, a web sink on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.testing.sources import RtspServer, gst_rtsp_unavailable, loop_clip


def run_streamer(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "160"},
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def models(store_path: Callable[[str], Path]) -> None:
    """The detector and the default VA model must be in the store."""
    store_path("yunet")
    store_path("fer")


@pytest.fixture(scope="session")
def face_video(store_path: Callable[[str], Path]) -> Path:
    return store_path("single_face.mp4")


@pytest.fixture(scope="session")
def replay_jsonl(models: None, face_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JSON lines of a real replay of single_face.mp4 (one track)."""
    out = tmp_path_factory.mktemp("replay") / "single_face.jsonl"
    proc = run_streamer("replay", str(face_video), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def face_loop(face_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """single_face.mp4 remuxed back to back for 60 s (a camera that keeps going)."""
    return loop_clip(face_video, tmp_path_factory.mktemp("loop") / "face_loop.mp4", 60.0)


@pytest.fixture
def face_camera(face_loop: Path) -> Iterator[RtspServer]:
    """A real GStreamer RTSP server streaming the face loop."""
    reason = gst_rtsp_unavailable()
    if reason:
        pytest.skip(f"GStreamer RTSP server unavailable: {reason}")
    with RtspServer(face_loop) as srv:
        yield srv
