"""LiveSource over HTTP: an HLS stream served by a real HTTP server on loopback."""

from __future__ import annotations

import functools
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.bus import EventBus
from streamer.messages import CameraState
from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource
from tests.helpers.sources import StatusLog, wait_until
from tests.helpers.wait import SLACK_S


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 s HLS stream (1 s MPEG-TS segments, H.264 160x120 at 15 fps) made with PyAV."""
    d = tmp_path_factory.mktemp("hls")
    options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    with av.open(str(d / "live.m3u8"), "w", format="hls", options=options) as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.gop_size = 15
        for i in range(60):
            img = np.full((120, 160, 3), (i * 4) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return d


@pytest.fixture
def http_server(hls_dir: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(hls_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_hls_over_http_frames_flow_and_end_of_stream_reconnects(
    http_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamer.sources")
    url = f"http://viewer:HttpPass9@{http_server}/live.m3u8"
    cfg = CameraConfig(name="hls", url=url, backoff={"initial_s": 0.1, "max_s": 0.5})
    bus = EventBus()
    log = StatusLog(bus)
    got = []
    async with LiveSource(cfg, bus) as src:
        async for frame in src:
            got.append(frame)
            if src.stats().reconnects >= 1 and len(got) >= 20:
                break
    assert got[0].image.shape == (120, 160, 3)
    assert src.fps == pytest.approx(15.0)
    # The playlist ends (#EXT-X-ENDLIST): for a live source that is a lost stream.
    assert CameraState.RECONNECTING in log.states()
    assert "HttpPass9" not in caplog.text
    assert "http://***@127.0.0.1" in caplog.text


async def test_http_404_is_a_clear_offline_error(http_server: str) -> None:
    cfg = CameraConfig(
        name="nf", url=f"http://{http_server}/missing.m3u8", backoff={"initial_s": 0.1}
    )
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cfg, bus) as src:
        await wait_until(lambda: src.stats().reconnects >= 2, SLACK_S, "two retries")
    offline = [s for s in log.poll() if s.state is CameraState.OFFLINE]
    assert offline and "404" in offline[0].detail
