"""Open a camera once and decode its first frame: what ``streamer doctor`` reports.

:func:`probe_camera` blocks (FFmpeg); the caller bounds it (a thread it can abandon, as
the live source does with a wedged call). It opens the source exactly as the live source
does (:func:`~streamer.sources.live.demuxer_options`, the camera's open and read
timeouts) and closes it before returning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import av

from streamer.errors import SourceError
from streamer.sources.config import CameraConfig
from streamer.sources.decode import open_stream
from streamer.sources.live import demuxer_options, open_container
from streamer.sources.redact import redact

TIMEOUT_FRACTION = 0.95  # an open that failed this late into open_timeout_s timed out


@dataclass(frozen=True)
class CameraProbe:
    """What the first frame of a camera says about it.

    Attributes:
        width: pixels of the decoded frame.
        height: pixels of the decoded frame.
        fps: the stream's average frame rate (None when it declares none).
        codec: the decoder's name (``h264``, ``hevc``, ``mjpeg``, ...).
        first_frame_s: seconds from the start of the open to the first decoded frame.
    """

    width: int
    height: int
    fps: float | None
    codec: str
    first_frame_s: float

    def describe(self) -> str:
        fps = f"{self.fps:.4g} fps" if self.fps else "fps unknown"
        return (
            f"{self.width}x{self.height} {self.codec} {fps}, "
            f"first frame in {self.first_frame_s:.2f} s"
        )


def probe_camera(cfg: CameraConfig) -> CameraProbe:
    """Open ``cfg``'s source, decode one frame, close it.

    Raises:
        SourceError: it cannot be opened, or it ended or failed before a frame was
            decoded (the message names the camera, URLs redacted).
        ConfigError: its URL names an unset environment variable.
    """
    url, fmt, options = demuxer_options(cfg)
    start = time.monotonic()
    try:
        container = open_container(
            url,
            format=fmt,
            options=options,
            timeout=(cfg.open_timeout_s, cfg.stall_timeout_s),
            hwaccel=cfg.hwaccel,
        )
    except (av.FFmpegError, OSError) as err:
        # FFmpeg reports its own timeout as whatever the demuxer saw last ("Invalid data
        # found"): say that it was the timeout.
        late = time.monotonic() - start >= cfg.open_timeout_s * TIMEOUT_FRACTION
        why = f"no answer within open_timeout_s = {cfg.open_timeout_s:g} s" if late else ""
        raise SourceError(
            f"camera {cfg.name}: cannot open {redact(url)}: "
            + (f"{why} ({redact(err)})" if why else redact(err))
        ) from err
    try:
        if not container.streams.video:
            raise SourceError(f"camera {cfg.name}: {redact(url)} has no video stream")
        stream = open_stream(container, "NONE", 1)
        try:
            frame = next(iter(container.decode(stream)), None)
        except (av.FFmpegError, OSError) as err:
            raise SourceError(
                f"camera {cfg.name}: no frame decoded from {redact(url)}: {redact(err)}"
            ) from err
        if frame is None:
            raise SourceError(f"camera {cfg.name}: {redact(url)} ended before a first frame")
        rate = stream.average_rate or stream.guessed_rate
        return CameraProbe(
            width=frame.width,
            height=frame.height,
            fps=float(rate) if rate else None,
            codec=stream.codec_context.name,
            first_frame_s=time.monotonic() - start,
        )
    finally:
        container.close()
