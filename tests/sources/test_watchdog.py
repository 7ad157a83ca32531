"""A wedged FFmpeg call (open, read, close) cannot wedge a camera."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from streamer.bus import EventBus
from streamer.messages import CameraState, Frame
from streamer.sources.config import CameraConfig
from streamer.sources.live import LiveSource, open_container
from streamer.testing.sources import make_clip
from tests.helpers.sources import StatusLog, wait_until

FAST = {"initial_s": 0.05, "max_s": 0.2, "jitter": 0.0}


class WedgedContainer:
    """A real container whose ``demux`` (after ``after`` packets) or ``close`` never
    returns until ``release`` is set: an FFmpeg call that ignores the interrupt callback."""

    def __init__(
        self, inner: Any, release: threading.Event, *, demux_after: int | None, close: bool
    ) -> None:
        self.inner, self.release = inner, release
        self.demux_after, self.block_close = demux_after, close
        self.streams = inner.streams
        self.format = inner.format

    def demux(self, *args: Any, **kw: Any) -> Iterator[Any]:
        for i, packet in enumerate(self.inner.demux(*args, **kw)):
            if self.demux_after is not None and i == self.demux_after:
                self.release.wait()
            yield packet

    def close(self) -> None:
        if self.block_close:
            self.release.wait()
        self.inner.close()


class Opener:
    """First open: a wedged container of ``wedged_clip``; later opens: the real ``clip``."""

    def __init__(self, wedged_clip: Path, release: threading.Event, **wedge: Any) -> None:
        self.wedged_clip, self.release, self.wedge = wedged_clip, release, wedge
        self.opens = 0

    def __call__(self, url: str, **kw: Any) -> Any:
        self.opens += 1
        if self.opens == 1:
            return WedgedContainer(
                open_container(str(self.wedged_clip), **kw), self.release, **self.wedge
            )
        return open_container(url, **kw)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 160x120 clip: frames of the wedged (abandoned) thread are told apart by size."""
    return make_clip(tmp_path_factory.mktemp("wedge") / "small.mp4", 2.0, 30, size=(160, 120))


@pytest.mark.parametrize(
    ("wedge", "blocked_in"),
    [({"demux_after": 10, "close": True}, "read"), ({"demux_after": None, "close": True}, "close")],
)
async def test_a_wedged_decode_thread_is_abandoned_and_never_delivers(
    wedge: dict[str, Any], blocked_in: str, short_clip: Path, small_clip: Path
) -> None:
    release = threading.Event()
    opener = Opener(small_clip, release, **wedge)
    cfg = CameraConfig(
        name="cam1",
        url=str(short_clip),
        realtime=False,
        stall_timeout_s=0.5,
        wedge_s=0.5,
        backoff=FAST,
        loop=wedge["demux_after"] is None,
    )
    bus = EventBus()
    log = StatusLog(bus)
    got: list[Frame] = []
    try:
        async with LiveSource(cfg, bus, opener=opener) as src:
            first = src.thread
            async for frame in src:
                got.append(frame)
                if frame.width == 320 and len([f for f in got if f.width == 320]) == 30:
                    break
            assert src.abandoned == 1 and src.thread is not first
            assert first is not None and first.is_alive(), "the old thread is still wedged"
            release.set()  # the wedged call returns: the old thread must not deliver
            await wait_until(lambda: not first.is_alive(), 10, "the abandoned thread to end")
            async for frame in src:
                got.append(frame)
                if len([f for f in got if f.width == 320]) >= 60:
                    break
    finally:
        release.set()
    sizes = [f.width for f in got]
    first_new = sizes.index(320)
    assert 160 not in sizes[first_new:], "the abandoned thread delivered a frame"
    if blocked_in == "read":
        assert sizes[:first_new] == [160] * first_new and first_new >= 5
    assert CameraState.STOPPED in log.states()
    assert all(s.state is not CameraState.STOPPED for s in log.seen[:-1]), [
        (s.state.value, s.detail) for s in log.seen
    ]


async def test_an_open_that_never_returns_is_abandoned(short_clip: Path) -> None:
    release = threading.Event()
    calls = 0

    def opener(url: str, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            release.wait()
            raise av.error.ExitError(-1, "released")
        return open_container(url, **kw)

    cfg = CameraConfig(
        name="cam1",
        url=str(short_clip),
        realtime=False,
        open_timeout_s=0.2,
        wedge_s=0.5,
        backoff=FAST,
    )
    try:
        async with LiveSource(cfg, opener=opener) as src:
            frames = [f async for f in src]
            assert src.abandoned == 1
    finally:
        release.set()
    assert len(frames) == 120


class _EndsWithError:
    """A real container whose demux fails after ``after`` packets (a lost stream)."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner, self.after = inner, after
        self.streams, self.format = inner.streams, inner.format

    def demux(self, *args: Any, **kw: Any) -> Iterator[Any]:
        for i, packet in enumerate(self.inner.demux(*args, **kw)):
            if i == self.after:
                raise av.error.InvalidDataError(1094995529, "stream lost")
            yield packet

    def close(self) -> None:
        self.inner.close()


async def test_retry_count_restarts_when_the_backoff_resets(short_clip: Path) -> None:
    """ "retry N" is the N-th retry since the backoff last reset, not since the start."""
    calls = 0

    def opener(url: str, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # healthy for about 1.3 s, then the stream is lost
            return _EndsWithError(open_container(url, **kw), after=40)
        return open_container(str(short_clip.with_name("missing.mp4")), **kw)

    backoff = {"initial_s": 0.05, "max_s": 0.2, "jitter": 0.0, "healthy_after_s": 0.3}
    cfg = CameraConfig(name="cam1", url=str(short_clip), realtime=True, backoff=backoff)
    bus = EventBus()
    log = StatusLog(bus)
    async with LiveSource(cfg, bus, opener=opener) as src:
        drain = asyncio.create_task(_drain(src))
        await log.wait_for(lambda s: calls >= 5 and "retry 2 " in s.detail, 30)
    await drain
    retries = [s.detail.split("; ")[-1].split(" in ")[0] for s in log.seen if "; retry" in s.detail]
    assert retries[:4] == ["retry 1", "retry 2", "retry 1", "retry 2"], log.seen


async def _drain(src: LiveSource) -> None:
    async for _ in src:
        pass
