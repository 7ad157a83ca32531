"""Config of video sources (cameras, files). Owned by the sources stage."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, model_validator

from streamer.config_base import StrictModel
from streamer.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# The one cap on decoded picture size, for video frames and still images alike
# (`max_pixels` of a camera, `streamer replay|predict --max-pixels`): 8192 x 8192.
MAX_PIXELS = 1 << 26  # pixels


def env_references(text: str) -> list[str]:
    """The environment variables ``${NAME}`` in ``text`` names, in order, once each."""
    return list(dict.fromkeys(_ENV_REF.findall(text)))


class BackoffConfig(StrictModel):
    """Capped, jittered exponential backoff between reconnect attempts."""

    initial_s: float = Field(0.5, gt=0.0, le=60.0, description="delay before the first retry")
    max_s: float = Field(30.0, gt=0.0, le=3600.0, description="upper bound of any delay")
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="growth factor per failure")
    jitter: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="each delay is scaled by a uniform factor in [1 - jitter, 1] so that "
        "many cameras do not retry in lockstep",
    )
    healthy_after_s: float = Field(
        30.0,
        gt=0.0,
        le=3600.0,
        description="frames flowing this long reset the backoff to its initial delay",
    )

    @model_validator(mode="after")
    def _initial_le_max(self) -> BackoffConfig:
        if self.initial_s > self.max_s:
            raise ValueError(f"initial_s ({self.initial_s}) must be <= max_s ({self.max_s})")
        return self


class CameraConfig(StrictModel):
    """One camera: a name and a URL (``rtsp://``, ``http(s)://``, ``/dev/videoN``, file)."""

    name: str = Field(
        description="camera name; used in MQTT topics and outputs",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    url: str = Field(
        min_length=1,
        description="source URL or path: rtsp://, rtsps://, http(s):// (MJPEG, HLS .m3u8), "
        "/dev/videoN (V4L2) or a video file; ${NAME} is replaced by the environment "
        "variable NAME when the camera opens (keep passwords out of YAML); credentials "
        "are redacted in logs",
    )
    transport: Literal["tcp", "udp", "http", "https"] = Field(
        "tcp", description="RTSP lower transport (TCP interleaved by default: no UDP loss)"
    )
    open_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=120.0,
        description="give up opening (connect, handshake, stream probe) after this long",
    )
    stall_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=600.0,
        description="no decoded frame for this long reopens the source; raised to at least "
        "10 frame intervals for slow streams (fps-aware)",
    )
    fps: float | None = Field(
        None,
        gt=0.0,
        le=480.0,
        description="expected frame rate (frames/s); when unset it is read from the stream",
    )
    max_corrupt_in_row: int = Field(
        30,
        ge=1,
        le=100_000,
        description="this many undecodable packets in a row restart the source",
    )
    wedge_s: float = Field(
        10.0,
        gt=0.0,
        le=600.0,
        description="an FFmpeg call (open, read, decode, close) still running this long past "
        "its own timeout is wedged: the decode thread is abandoned and a fresh one started",
    )
    realtime: bool = Field(
        True,
        description="files only: pace frames at their media time (like a camera); when "
        "false, decode as fast as the pipeline consumes and lose no frame",
    )
    loop: bool = Field(False, description="files only: start again at the end")
    hwaccel: str | None = Field(
        None,
        min_length=1,
        description="FFmpeg hardware decoder device type, e.g. 'cuda' on NVIDIA; falls back "
        "to software decoding when unavailable",
    )
    decode_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="decoder threads of this camera: 1 decodes in the camera's own thread "
        "(many cameras are the parallelism, and a frame leaves the decoder as soon as it "
        "is decoded); more enables FFmpeg's frame and slice threads, for one camera whose "
        "resolution needs more than a core, at a latency of up to threads - 1 frames",
    )
    analysis_fps: float | None = Field(
        None,
        ge=0.0,
        le=480.0,
        description="analyse at most this many frames per second of media time (the first "
        "frame of each 1/analysis_fps slot); the others are decoded where the codec needs "
        "them but never analysed, counted as skipped_by_rate; unset: the config's "
        "analysis.fps; 0: every frame whatever analysis.fps says",
    )
    max_pixels: int = Field(
        MAX_PIXELS,
        ge=1,
        le=1 << 31,
        description="pictures larger than this (width x height) are skipped and counted "
        "as damage, never converted; the same cap streamer predict applies to images",
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="extra FFmpeg demuxer options, e.g. {video_size: 1280x720, "
        "input_format: mjpeg} for V4L2",
    )
    backoff: BackoffConfig = BackoffConfig()

    def effective_analysis_fps(self, default: float | None) -> float | None:
        """This camera's analysis rate: its own ``analysis_fps``, else ``default`` (the
        config's ``analysis.fps``); None (or 0): every frame."""
        fps = self.analysis_fps if self.analysis_fps is not None else default
        return fps or None

    def resolved_url(self) -> str:
        """``url`` with every ``${NAME}`` replaced by the environment variable NAME.

        Raises:
            ConfigError: a referenced variable is not set.
        """

        def value(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"cameras[{self.name}].url: environment variable {name} is not set"
                )
            return os.environ[name]

        return _ENV_REF.sub(value, self.url)
