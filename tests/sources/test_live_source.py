"""LiveSource on local media: hand-off, pacing, faults injected into real containers.

RTSP behaviour against a real server is in test_live_rtsp.py; these tests use files
(PyAV-made clips) so that each fault is exact and the tests are fast.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import av
import av.error
import pytest

from streamer.bus import EventBus
from streamer.messages import CameraState, Frame
from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource, demuxer_options, open_container, source_kind
from streamer.testing.sources import corrupt_packets, make_clip
from tests.helpers.sources import StatusLog, wait_until

FAST_BACKOFF = {"initial_s": 0.05, "max_s": 0.2, "jitter": 0.0}


def cam(url: str | Path, **kw: Any) -> CameraConfig:
    kw.setdefault("backoff", FAST_BACKOFF)
    return CameraConfig(name=kw.pop("name", "cam1"), url=str(url), **kw)


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(video=0) for _ in p.decode())


def source_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("source-")]


@pytest.mark.parametrize(
    ("url", "kind", "fmt", "options"),
    [
        ("rtsp://u:p@h/s", "rtsp", None, {"rtsp_transport": "tcp"}),
        ("RTSPS://h/s", "rtsp", None, {"rtsp_transport": "tcp"}),
        ("http://h/mjpg", "http", None, {}),
        ("https://h/live.m3u8", "http", None, {}),
        ("/dev/video0", "device", "v4l2", {}),
        ("v4l2:///dev/video2", "device", "v4l2", {}),
        ("clip.mp4", "file", None, {}),
    ],
)
def test_source_kind_and_options(
    url: str, kind: str, fmt: str | None, options: dict[str, str]
) -> None:
    assert source_kind(url) == kind
    _, got_fmt, got_options = demuxer_options(CameraConfig(name="c", url=url))
    assert got_fmt == fmt
    assert got_options == options


def test_udp_transport_and_extra_options() -> None:
    cfg = CameraConfig(name="c", url="rtsp://h/s", transport="udp", options={"buffer_size": "1"})
    assert demuxer_options(cfg)[2] == {"rtsp_transport": "udp", "buffer_size": "1"}


def test_stall_timeout_is_fps_aware() -> None:
    src = LiveSource(cam("x.mp4", stall_timeout_s=5.0))
    assert src.stall_timeout(30.0) == 5.0
    assert src.stall_timeout(1.0) == 10.0  # 10 frame intervals at 1 fps
    assert src.stall_timeout(None) == 5.0


async def test_file_as_fast_as_possible_loses_no_frame(short_clip: Path) -> None:
    """realtime=False: the decode thread waits for a slow consumer; every frame arrives."""
    expected = count_frames(short_clip)
    bus = EventBus()
    log = StatusLog(bus)
    got: list[Frame] = []
    async with LiveSource(cam(short_clip, realtime=False), bus) as src:
        async for frame in src:
            got.append(frame)
            if len(got) % 10 == 0:
                await asyncio.sleep(0.02)  # slower than the decoder
    assert [f.index for f in got] == list(range(expected))
    assert all(b.t > a.t for a, b in itertools.pairwise(got))
    assert got[0].t == 0.0
    assert got[-1].t == pytest.approx((expected - 1) / 30, abs=1e-3)
    assert got[0].image.shape == (240, 320, 3) and got[0].image.dtype.name == "uint8"
    assert src.stats().skipped == 0
    assert log.states() == [CameraState.STARTING, CameraState.ONLINE, CameraState.STOPPED]
    assert src.thread is not None and not src.thread.is_alive()


async def test_latest_frame_wins_when_inference_is_slower(short_clip: Path) -> None:
    """A camera-paced source with a slow consumer: skips counted, memory flat, fresh frames."""
    frame_bytes = 320 * 240 * 3
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        received: list[int] = []
        behind: list[int] = []
        async with LiveSource(cam(short_clip, realtime=True)) as src:
            async for frame in src:
                received.append(frame.index)
                behind.append(src.frames - 1 - frame.index)
                await asyncio.sleep(0.1)  # "inference" at ~10 fps vs a 30 fps camera
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = src.stats()
    assert stats.frames == 120
    assert stats.skipped > 40  # about 2 of 3 frames cannot be analysed
    assert stats.delivered == len(received)
    assert stats.frames == stats.delivered + stats.skipped
    # Each frame handed over was the newest one decoded at that moment (or the one being
    # decoded right after it): latency is bounded by one frame, not by a queue.
    assert max(behind) <= 1
    # A growing queue would hold ~80 frames here; the mailbox holds one.
    assert peak - base < 12 * frame_bytes


async def test_realtime_file_is_paced_at_media_time(short_clip: Path) -> None:
    """Paced playback: the last frame cannot arrive before its media time has passed."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    last = None
    async with LiveSource(cam(short_clip, realtime=True)) as src:
        async for frame in src:
            last = frame
    assert last is not None
    elapsed = loop.time() - t0
    # A lower bound only (pacing sleeps until media time); no upper bound on a busy box.
    assert elapsed >= last.t - 0.05


class EagainContainer:
    """Wraps a real container: its packet iterator raises EAGAIN ``times`` times."""

    def __init__(self, inner: Any, at_packet: int, times: int) -> None:
        self._inner = inner
        self._at = at_packet
        self._left = times
        self._served = 0
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def demux(self, *args: Any, **kwargs: Any) -> Any:
        gen = self._inner.demux(*args, **kwargs)
        while True:
            if self._served == self._at and self._left > 0:
                self._left -= 1
                self.raised += 1
                raise av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            try:
                packet = next(gen)
            except StopIteration:
                return
            self._served += 1
            yield packet


async def test_transient_eagain_is_retried_not_end_of_stream(short_clip: Path) -> None:
    wrappers: list[EagainContainer] = []

    def opener(url: str, **kw: Any) -> Any:
        w = EagainContainer(open_container(url, **kw), at_packet=30, times=3)
        wrappers.append(w)
        return w

    got = []
    async with LiveSource(cam(short_clip, realtime=False), opener=opener) as src:
        async for frame in src:
            got.append(frame.index)
    assert wrappers[0].raised == 3
    assert len(wrappers) == 1  # no reopen
    assert got == list(range(120))  # nothing lost around the retries
    stats = src.stats()
    assert stats.eagain == 3
    assert stats.reconnects == 0 and stats.errors == 0


async def test_persistent_eagain_becomes_a_stall(short_clip: Path) -> None:
    """A device that only ever says EAGAIN is a stall: reopened, never a busy loop."""
    opened: list[EagainContainer] = []

    def opener(url: str, **kw: Any) -> Any:
        w = EagainContainer(open_container(url, **kw), at_packet=5, times=10**9)
        opened.append(w)
        return w

    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(
        cam(short_clip, stall_timeout_s=0.3, realtime=False), bus, opener=opener
    ) as src:
        frames = 0
        async for _ in src:
            frames += 1
            if src.stats().stalls >= 2:
                break
    st = src.stats()
    assert st.stalls >= 2 and st.reconnects >= 2
    # Retries are spaced by EAGAIN_RETRY_S: hundreds per stall window, not millions.
    assert st.eagain < 2000 * st.stalls + 2000
    assert any("EAGAIN" in s.detail for s in log.poll())


async def test_corrupt_packets_are_skipped_and_counted(clip_dir: Path) -> None:
    clip = make_clip(clip_dir / "corrupt_few.mp4", 3.0, 30)
    corrupt_packets(clip, [40, 41, 42])
    got = []
    async with LiveSource(cam(clip, realtime=False)) as src:
        async for frame in src:
            got.append(frame)
    st = src.stats()
    assert st.corrupt >= 3
    assert st.reconnects == 0  # a few bad packets do not restart the source
    assert len(got) >= 90 - st.corrupt - 30  # at worst the rest of that GOP is lost
    assert got[-1].t == pytest.approx(89 / 30, abs=1e-3)  # decoding went on to the end


async def test_burst_of_corrupt_packets_restarts_with_backoff(clip_dir: Path) -> None:
    clip = make_clip(clip_dir / "corrupt_burst.mp4", 3.0, 30)
    corrupt_packets(clip, list(range(31, 80)))
    bus = EventBus()
    log = StatusLog(bus)
    backoff = {"initial_s": 0.05, "max_s": 0.4, "jitter": 0.0, "multiplier": 2.0}
    cfg = cam(clip, realtime=False, loop=True, max_corrupt_in_row=10, backoff=backoff)
    async with LiveSource(cfg, bus) as src:
        consumer = asyncio.create_task(drain(src))
        await log.wait_for(lambda s: "retry 4 " in s.detail, 30)
    await consumer
    details = [s.detail for s in log.poll() if s.state is CameraState.RECONNECTING]
    assert all("10 corrupt packets in a row" in d for d in details[:4])
    # Exponential, capped delays between restarts: never a busy loop.
    assert [d.split(" in ")[-1] for d in details[:4]] == ["0.1 s", "0.1 s", "0.2 s", "0.4 s"]
    assert src.stats().corrupt >= 40


async def drain(src: LiveSource) -> int:
    n = 0
    async for _ in src:
        n += 1
    return n


def _bad_file(kind: str, path: Path, good: Path) -> Path:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:2000])
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated"])
async def test_bad_file_goes_offline_names_the_file_and_retries(
    kind: str, clip_dir: Path, short_clip: Path
) -> None:
    path = _bad_file(kind, clip_dir / f"bad_{kind}.mp4", short_clip)
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cam(path), bus) as src:
        await wait_until(lambda: src.stats().reconnects >= 2, 20, "two retries")
    offline = [s for s in log.poll() if s.state is CameraState.OFFLINE]
    assert offline, log.seen
    assert path.name in offline[0].detail
    assert log.seen[-1].state is CameraState.STOPPED


async def test_media_time_and_index_continue_across_reopen(short_clip: Path) -> None:
    """A looped file reopens like a reconnecting camera: t and index never go back."""
    got: list[Frame] = []
    async with LiveSource(cam(short_clip, realtime=False, loop=True)) as src:
        async for frame in src:
            got.append(frame)
            if len(got) >= 250:
                break
    assert src.stats().reconnects >= 2
    assert [f.index for f in got] == list(range(250))
    assert all(b.t > a.t for a, b in itertools.pairwise(got))


async def test_stop_ends_iteration_and_leaves_no_thread(short_clip: Path) -> None:
    bus = EventBus()
    log = StatusLog(bus)
    src = LiveSource(cam(short_clip, realtime=True, loop=True), bus)
    async with src:
        async for _ in src:
            break
        assert src.thread is not None and src.thread.is_alive()
    assert not src.thread.is_alive()
    assert source_threads() == []
    assert log.states()[-1] is CameraState.STOPPED
    with pytest.raises(StopAsyncIteration):
        await src.__anext__()


async def test_statuses_carry_counters_and_no_credentials(tmp_path: Path) -> None:
    bus = EventBus()
    log = StatusLog(bus)
    url = "rtsp://admin:topsecret@127.0.0.1:1/cam"  # port 1: refused at once
    async with LiveSource(cam(url), bus) as src:
        await wait_until(lambda: src.stats().reconnects >= 1, 20, "a retry")
    for st in log.poll():
        rec = st.to_record()
        assert "topsecret" not in str(rec)
    assert src.status.state is CameraState.STOPPED
    assert src.status.errors >= 1


async def test_hwaccel_falls_back_to_cpu_when_unavailable(
    short_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """hwaccel: cuda on a machine without a usable CUDA device still decodes (on the CPU)."""
    from av.codec.hwaccel import hwdevices_available

    if "cuda" not in hwdevices_available():
        pytest.skip("this FFmpeg build has no CUDA hwaccel at all")
    got = []
    async with LiveSource(cam(short_clip, realtime=False, hwaccel="cuda")) as src:
        async for frame in src:
            got.append(frame)
    assert len(got) == 120
    assert got[0].image.shape == (240, 320, 3)
    if src.hwaccel_failed:  # no GPU here: one warning, then the CPU for good
        assert caplog.text.count("hardware decoding (cuda) unavailable") == 1


def test_url_environment_references(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.errors import ConfigError

    cfg = CameraConfig(name="c", url="rtsp://viewer:${CAM_PW}@10.0.0.7/${CAM_PATH}")
    monkeypatch.setenv("CAM_PW", "s3cr3t")
    monkeypatch.setenv("CAM_PATH", "stream1")
    assert cfg.resolved_url() == "rtsp://viewer:s3cr3t@10.0.0.7/stream1"
    assert demuxer_options(cfg)[0] == "rtsp://viewer:s3cr3t@10.0.0.7/stream1"
    assert LiveSource(cfg).safe_url == "rtsp://***@10.0.0.7/${CAM_PATH}"
    monkeypatch.delenv("CAM_PW")
    with pytest.raises(ConfigError, match="CAM_PW is not set"):
        cfg.resolved_url()
    assert CameraConfig(name="c", url="rtsp://h/$notref").resolved_url() == "rtsp://h/$notref"


async def test_missing_url_variable_goes_offline_and_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cam("rtsp://u:${NOT_SET_ANYWHERE}@h/x"), bus) as src:
        await wait_until(lambda: src.stats().reconnects >= 1, 20, "a retry")
    offline = [s for s in log.poll() if s.state is CameraState.OFFLINE]
    assert "NOT_SET_ANYWHERE is not set" in offline[0].detail


async def test_missing_webcam_device_goes_offline_and_retries() -> None:
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cam("/dev/video99"), bus) as src:
        await wait_until(lambda: src.stats().reconnects >= 2, 20, "two retries")
    offline = [s for s in log.poll() if s.state is CameraState.OFFLINE]
    assert offline and "/dev/video99" in offline[0].detail


class UntimedContainer:
    """Wraps a real container: from packet ``start`` on, packets lose pts and dts."""

    def __init__(self, inner: Any, start: int, count: int) -> None:
        self._inner = inner
        self._start = start
        self._end = start + count
        self._served = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def demux(self, *args: Any, **kwargs: Any) -> Any:
        for packet in self._inner.demux(*args, **kwargs):
            if self._start <= self._served < self._end and packet.size:
                packet.pts = None
                packet.dts = None
            self._served += 1
            yield packet


@pytest.mark.parametrize(("count", "restarts"), [(5, False), (10**6, True)])
async def test_timestamp_less_packets(short_clip: Path, count: int, restarts: bool) -> None:
    """Timestamp-less packets: a few are decoded (clock time); a long run restarts."""

    def opener(url: str, **kw: Any) -> Any:
        return UntimedContainer(open_container(url, **kw), start=30, count=count)

    bus = EventBus()
    log = StatusLog(bus)
    cfg = cam(short_clip, realtime=False, max_corrupt_in_row=10)
    got: list[Frame] = []
    async with LiveSource(cfg, bus, opener=opener) as src:
        async for frame in src:
            got.append(frame)
            if restarts and src.stats().reconnects >= 2:
                break
    assert all(b.t > a.t for a, b in itertools.pairwise(got))  # t stays monotonic
    if restarts:
        details = [s.detail for s in log.poll() if s.state is CameraState.RECONNECTING]
        assert "10 packets without timestamps in a row" in details[0]
    else:
        assert len(got) == 120 and src.stats().untimed == 5
        assert src.stats().reconnects == 0


@pytest.mark.parametrize(("threads", "expected"), [(1, ("NONE", 1)), (3, ("AUTO", 3))])
async def test_decode_threads_of_a_camera(
    short_clip: Path, monkeypatch: pytest.MonkeyPatch, threads: int, expected: tuple[str, int]
) -> None:
    """One decoder thread by default (no frame-threading delay; cameras are the
    parallelism); more turn on FFmpeg's frame and slice threads. Every frame arrives."""
    import streamer.sources.live as live

    seen: list[tuple[str, int]] = []
    from streamer.sources.decode import open_stream as real_open

    def recording_open(container: Any, kind: str = "AUTO", count: int = 0) -> Any:
        stream = real_open(container, kind, count)
        seen.append((stream.thread_type.name, int(stream.thread_count)))
        return stream

    monkeypatch.setattr(live, "open_stream", recording_open)
    async with LiveSource(cam(short_clip, realtime=False, decode_threads=threads)) as src:
        n = sum([1 async for _ in src])
    assert n == count_frames(short_clip)
    assert seen == [expected]


def test_decode_threads_must_be_positive() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="decode_threads"):
        CameraConfig(name="c", url="rtsp://h/x", decode_threads=0)
