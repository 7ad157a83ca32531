"""LiveSource against a real RTSP server on loopback (GStreamer's gst-rtsp-server).

The server is a child process started and stopped by each test; faults are real: the
process is killed (connection reset), paused with SIGSTOP (connection open, no packets),
or serves a clip whose H.264 payload has been overwritten with random bytes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer.bus import EventBus
from streamer.faces.config import DetectorConfig
from streamer.faces.yunet import YuNetDetector
from streamer.messages import CameraState
from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource
from streamer.testing.net import free_port
from streamer.testing.sources import (
    RtspServer,
    SilentServer,
    corrupt_packets,
    loop_clip,
    make_clip,
)
from tests.helpers.sources import StatusLog, wait_until
from tests.helpers.wait import SLACK_S

BACKOFF = {"initial_s": 0.2, "max_s": 1.0, "jitter": 0.0}

StartServer = Callable[..., RtspServer]


def cam(url: str, name: str = "cam1", **kw: Any) -> CameraConfig:
    kw.setdefault("backoff", BACKOFF)
    kw.setdefault("open_timeout_s", 3.0)
    return CameraConfig(name=name, url=url, **kw)


async def take(src: LiveSource, n: int, timeout_s: float = SLACK_S) -> list[Any]:
    """The next ``n`` frames of ``src`` (fails after ``timeout_s``)."""

    async def go() -> list[Any]:
        out = []
        async for frame in src:
            out.append(frame)
            if len(out) >= n:
                break
        return out

    return await asyncio.wait_for(go(), timeout_s)


@pytest.mark.rtsp
async def test_frames_flow_and_faces_are_found(
    rtsp_server: StartServer, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    clip = loop_clip(store_path("single_face.mp4"), tmp_path / "face.mp4", 20.0)
    srv = rtsp_server(clip, user="admin")
    detector = YuNetDetector(store_path("yunet"), DetectorConfig())
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cam(srv.url), bus) as src:
        frames = await take(src, 30)
    assert src.fps == pytest.approx(30.0, abs=0.5)  # read from the stream
    assert frames[0].image.shape == (360, 640, 3)
    with_face = sum(1 for f in frames[::3] if detector.detect(f.image))
    assert with_face >= 8  # the man in the clip is found in (almost) every frame
    assert log.states()[:2] == [CameraState.STARTING, CameraState.ONLINE]
    assert log.states()[-1] is CameraState.STOPPED


@pytest.mark.rtsp
async def test_server_killed_then_restarted_frames_resume(
    rtsp_server: StartServer, long_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamer.sources")
    srv = rtsp_server(long_clip, user="admin", password="pw-kill")
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cam(srv.url), bus) as src:
        await take(src, 10)
        srv.kill()
        await log.wait_for(lambda s: s.state is CameraState.RECONNECTING, SLACK_S)
        # While the server is gone, open attempts fail and the camera is offline.
        await log.wait_for(lambda s: s.state is CameraState.OFFLINE, SLACK_S)
        before = src.stats().frames
        srv.start()  # same port
        # Frames resume within one capped backoff delay plus an open (and slack).
        await wait_until(
            lambda: src.stats().frames > before + 5,
            BACKOFF["max_s"] + 3.0 + SLACK_S,
            "frames after the restart",
        )
    states = log.states()
    i = states.index(CameraState.RECONNECTING)
    assert CameraState.ONLINE in states[i:]
    delays = [float(m) for m in re.findall(r"in ([0-9.]+) s", " ".join(s.detail for s in log.seen))]
    assert delays and max(delays) <= BACKOFF["max_s"]
    assert src.stats().reconnects >= 1
    assert "pw-kill" not in caplog.text
    assert "rtsp://***@127.0.0.1" in caplog.text


@pytest.mark.rtsp
async def test_stalled_server_is_detected_and_recovers(
    rtsp_server: StartServer, long_clip: Path
) -> None:
    """SIGSTOP: the TCP connection stays open but no packet comes (a stall)."""
    srv = rtsp_server(long_clip)
    bus = EventBus()
    log = StatusLog(bus)
    cfg = cam(srv.url, stall_timeout_s=1.0, open_timeout_s=1.0)
    async with LiveSource(cfg, bus) as src:
        await take(src, 5)
        srv.pause()
        try:
            await log.wait_for(lambda s: s.state is CameraState.RECONNECTING, 1.0 + SLACK_S)
            assert src.stats().stalls >= 1
        finally:
            srv.resume()
        n = src.stats().frames
        await wait_until(lambda: src.stats().frames > n + 5, SLACK_S, "frames after resume")
    states = log.states()
    assert states.count(CameraState.ONLINE) >= 2  # online -> reconnecting -> ... -> online
    assert any("timed out" in s.detail or "no decoded frame" in s.detail for s in log.seen)


async def test_server_that_accepts_and_never_answers() -> None:
    """Open times out within open_timeout_s; the camera is offline and keeps retrying."""
    bus = EventBus()
    log = StatusLog(bus)
    with SilentServer() as silent:
        cfg = cam(f"rtsp://127.0.0.1:{silent.port}/cam", open_timeout_s=0.5)
        async with LiveSource(cfg, bus) as src:
            st = await log.wait_for(lambda s: s.state is CameraState.OFFLINE, 0.5 + SLACK_S)
            await wait_until(lambda: silent.accepted >= 3, SLACK_S, "three connection attempts")
    assert src.stats().frames == 0
    assert src.stats().errors >= 2
    assert "open timed out after 0.5 s" in st.detail
    assert src.stats().stalls >= 1  # a server that never answers is a stall


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{refused}",  # nothing listens
        "nonexistent.invalid",  # name does not resolve
    ],
)
async def test_unreachable_host_clear_error_redacted_retries(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamer.sources")
    url = f"rtsp://admin:Sup3rSecret@{host.format(refused=free_port())}/stream"
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cam(url), bus) as src:
        await wait_until(lambda: src.stats().reconnects >= 3, SLACK_S, "three retries")
    offline = [s for s in log.poll() if s.state is CameraState.OFFLINE]
    assert offline
    assert "Sup3rSecret" not in caplog.text
    assert all("Sup3rSecret" not in str(s.to_record()) for s in log.seen)
    assert "rtsp://***@" in caplog.text
    assert "offline" in caplog.text


@pytest.mark.rtsp
async def test_corrupt_bytes_in_the_stream_are_skipped(
    rtsp_server: StartServer, clip_dir: Path
) -> None:
    clip = make_clip(clip_dir / "rtsp_corrupt.mp4", 30.0, 15, size=(160, 120))
    corrupt_packets(clip, [20, 21, 22, 50])
    srv = rtsp_server(clip)
    async with LiveSource(cam(srv.url), None) as src:
        frames = await take(src, 75, timeout_s=5.0 + SLACK_S)
    st = src.stats()
    assert st.corrupt >= 1
    assert st.reconnects == 0  # the process and the session live on
    assert frames[-1].index >= 74


@pytest.mark.rtsp
async def test_two_cameras_one_dead_the_other_keeps_producing(
    rtsp_server: StartServer, long_clip: Path
) -> None:
    good = rtsp_server(long_clip)
    doomed = rtsp_server(long_clip)
    bus = EventBus()
    log = StatusLog(bus)
    dead_url = f"rtsp://127.0.0.1:{free_port()}/none"
    sources = [
        LiveSource(cam(good.url, "good"), bus),
        LiveSource(cam(doomed.url, "doomed"), bus),
        LiveSource(cam(dead_url, "dead"), bus),
    ]
    for s in sources:
        await s.__aenter__()
    try:
        await take(sources[0], 5)
        await take(sources[1], 5)
        doomed.kill()
        await log.wait_for(
            lambda s: s.camera == "doomed" and s.state is CameraState.RECONNECTING, SLACK_S
        )
        # 2 s of stream at 15 fps while one camera is down and another never came up.
        got = await take(sources[0], 30)
        assert got[-1].index - got[0].index >= 29
    finally:
        for s in sources:
            await s.aclose()
    assert CameraState.ONLINE not in log.states("dead")
    assert sources[2].stats().reconnects >= 1
    assert sources[0].stats().reconnects == 0


@pytest.mark.rtsp
async def test_stop_while_stalled_leaves_no_thread(
    rtsp_server: StartServer, long_clip: Path
) -> None:
    """SIGTERM with a stalled camera: the decode thread is not stuck in a blocking read."""
    srv = rtsp_server(long_clip)
    src = LiveSource(cam(srv.url, stall_timeout_s=30.0))
    async with src:
        await take(src, 5)
        srv.pause()
        # Let the reader drain what the kernel buffered and block on a silent socket.
        await asyncio.sleep(2.0)
    try:
        assert src.thread is not None and not src.thread.is_alive()
        assert src.status.state is CameraState.STOPPED
    finally:
        srv.resume()
