"""Fixtures of the sources tests: synthetic clips made with PyAV, a real RTSP server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer.testing.sources import RtspServer, make_clip

CLIP_S = 4.0  # seconds of the short synthetic clip
CLIP_FPS = 30


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def short_clip(clip_dir: Path) -> Path:
    """4 s, 30 fps, 320x240 H.264 (120 frames)."""
    return make_clip(clip_dir / "short.mp4", CLIP_S, CLIP_FPS)


@pytest.fixture(scope="session")
def long_clip(clip_dir: Path) -> Path:
    """60 s, 15 fps, 160x120 H.264: long enough for any RTSP test."""
    return make_clip(clip_dir / "long.mp4", 60.0, 15, size=(160, 120))


@pytest.fixture
def rtsp_server() -> Iterator[Callable[..., RtspServer]]:
    """``rtsp_server(clip, **kw)`` starts a real RTSP server; all are stopped at the end
    (tests using it are marked ``rtsp``)."""
    servers: list[RtspServer] = []

    def start(clip: Path, **kw: object) -> RtspServer:
        srv = RtspServer(clip, **kw)  # type: ignore[arg-type]
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        srv.stop()
