"""Fixtures of the web tests: a real RTSP camera (real replays are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.sources import RtspServer


@pytest.fixture
def face_camera(face_loop: Path) -> Iterator[RtspServer]:
    """A real GStreamer RTSP server streaming the face loop (tests using it: ``rtsp``)."""
    with RtspServer(face_loop) as srv:
        yield srv
