"""Recorded video files for replay: every frame, in order, decoded in a worker thread.

The decode thread runs ahead of the analysis by at most ``queue_size`` frames and then
waits (no frame is ever dropped in replay). Replay is strict by default: a file that is
missing, empty, not a video, truncated or has undecodable packets is a
:class:`~streamer.errors.MediaError` naming the file; ``skip_corrupt=True`` skips and
counts bad packets instead.

    async with FileSource(path) as src:
        async for frame in src:
            ...
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import av.error

from streamer.errors import MediaError
from streamer.messages import Frame

logger = logging.getLogger(__name__)

# A file whose container announces N frames but decodes to fewer than this share of them
# is reported as truncated (real files differ by a few frames: no_face.mp4 gives 95/98).
TRUNCATED_SHARE = 0.9
_END = object()


def open_video(path: Path) -> av.container.InputContainer:
    """Open a local media file that must hold a video stream; errors name the file."""
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: not a readable video file ({err.strerror or err})") from err
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: has no video stream")
    return container


def iter_frames(
    path: Path, camera: str, skip_corrupt: bool = False, counters: dict[str, float] | None = None
) -> Iterator[Frame]:
    """Decode every frame of ``path`` (blocking; run it in a thread).

    Media time ``t`` is the frame's pts relative to the stream's start, in seconds.
    """
    counters = counters if counters is not None else {}
    counters.setdefault("corrupt", 0)
    counters.setdefault("decode_s", 0.0)
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decode overlaps itself
        tb = float(stream.time_base) if stream.time_base else 0.0
        start = stream.start_time or 0
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        index = 0
        last_t = 0.0
        packets = container.demux(stream)
        while True:
            t0 = time.perf_counter()
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as err:
                raise MediaError(f"{path}: cannot read past {last_t:.2f} s: {err}") from err
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                counters["corrupt"] += 1
                if not skip_corrupt:
                    raise MediaError(
                        f"{path}: corrupt data near {last_t:.2f} s ({err.strerror or err}); "
                        "use --skip-corrupt to skip bad packets"
                    ) from err
                logger.warning("%s: skipped a corrupt packet near %.2f s", path, last_t)
                continue
            for vf in frames:
                if vf.pts is not None and tb:
                    t = (vf.pts - start) * tb
                else:
                    t = index / fps if fps else last_t
                last_t = t
                image = vf.to_ndarray(format="bgr24")
                counters["decode_s"] += time.perf_counter() - t0
                yield Frame(camera, index, t, image)
                index += 1
                t0 = time.perf_counter()
        announced = stream.frames
        if announced and index < TRUNCATED_SHARE * announced:
            raise MediaError(
                f"{path}: truncated: decoded {index} of {announced} frames "
                f"(stops at {last_t:.2f} s)"
            )
        if index == 0:
            raise MediaError(f"{path}: no decodable video frame")
        counters["frames"] = index
    finally:
        container.close()


class FileSource:
    """A recorded file as an async iterator of frames (bounded read-ahead, lossless)."""

    def __init__(
        self,
        path: str | Path,
        camera: str | None = None,
        *,
        realtime: bool = False,
        queue_size: int = 8,
        skip_corrupt: bool = False,
    ) -> None:
        self.path = Path(path)
        self.camera = camera or self.path.stem
        self.realtime = realtime
        self.skip_corrupt = skip_corrupt
        self.counters: dict[str, float] = {"frames": 0, "corrupt": 0, "decode_s": 0.0}
        self._t0: float | None = None
        self._slots = threading.Semaphore(queue_size)
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info: dict[str, float] = {}

    @property
    def fps(self) -> float:
        return self._info.get("fps", 0.0)

    @property
    def frame_count(self) -> int:
        return int(self._info.get("frames", 0))

    async def __aenter__(self) -> FileSource:
        self._loop = asyncio.get_running_loop()
        # Open once up front so a bad file fails before any output is produced.
        container = await asyncio.to_thread(open_video, self.path)
        try:
            s = container.streams.video[0]
            self._info = {"fps": float(s.average_rate or 0.0), "frames": float(s.frames or 0)}
        finally:
            container.close()
        self._thread = threading.Thread(
            target=self._decode_loop, name=f"decode-{self.camera}", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self._slots.release()  # wake a producer waiting for room
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    def _post(self, item: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # loop closed: the consumer is gone
            self._stop.set()

    def _decode_loop(self) -> None:
        try:
            for frame in iter_frames(self.path, self.camera, self.skip_corrupt, self.counters):
                self._slots.acquire()
                if self._stop.is_set():
                    return
                self._post(frame)
            self._post(_END)
        except MediaError as err:
            self._post(err)
        except Exception as err:  # supervisor of the decode thread: never die silently
            logger.exception("%s: decoder failed", self.path)
            self._post(MediaError(f"{self.path}: decoder failed: {err}"))

    def __aiter__(self) -> FileSource:
        return self

    async def __anext__(self) -> Frame:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        self._slots.release()
        frame: Frame = item  # type: ignore[assignment]
        if self.realtime:
            await self._pace(frame.t)
        return frame

    async def _pace(self, t: float) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic() - t
        delay = self._t0 + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
