"""Frozen messages passed between pipeline stages and onto the event bus.

Data flows one way: ``Frame`` (source) -> ``Detection`` (faces) -> ``VASample``
(affect + smoothing, per track) -> ``Description`` (describer). ``TrackEvent`` and
``CameraStatus`` report lifecycle. Every message that leaves the process is made of
numbers and text only (see :meth:`to_record`); image data stays in ``Frame``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VA_SCHEMA = "streamer.va/1"
EVENT_SCHEMA = "streamer.event/1"
STATUS_SCHEMA = "streamer.status/1"
DESCRIPTION_SCHEMA = "streamer.description/1"


def _r(x: float, nd: int = 6) -> float:
    """Round for output; stable text across runs (determinism of JSONL)."""
    return round(float(x), nd)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame.

    Attributes:
        camera: camera name from the config (or the file stem in replay).
        index: 0-based frame number within the current stream session.
        t: media time in seconds (from the stream's pts, starting at 0).
        image: BGR uint8 array of shape (H, W, 3).
        wall_time: UNIX time when the frame was decoded (live outputs only).
    """

    camera: str
    index: int
    t: float
    image: np.ndarray = field(repr=False, compare=False)
    wall_time: float = 0.0

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class PreviewFrame:
    """An analysed frame with its image and its faces, for previews only.

    Never a :data:`Message`: it goes only to the bus's preview subscriptions (lossy, the
    dashboard's previews), never to a file, a broker or an LLM.

    Attributes:
        camera: camera name.
        index: the frame's index.
        image: BGR uint8 array of shape (H, W, 3), the decoded frame (not a copy).
        faces: the VA samples of this frame (boxes, smoothed VA).
    """

    camera: str
    index: int
    image: np.ndarray = field(repr=False, compare=False)
    faces: tuple[VASample, ...] = ()


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected face in frame pixels.

    Attributes:
        box: (x1, y1, x2, y2) float pixels.
        score: detector confidence in [0, 1].
        landmarks: (5, 2) float array (right eye, left eye, nose, mouth right, mouth
            left) as YuNet gives them, or None.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class VASample:
    """Valence/arousal of one tracked face in one frame (raw and Kalman-smoothed)."""

    camera: str
    frame: int
    t: float
    track_id: int
    box: tuple[float, float, float, float]
    valence: float
    arousal: float
    valence_raw: float | None
    arousal_raw: float | None
    variance: tuple[float, float]
    model: str
    wall_time: float | None = None

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "schema": VA_SCHEMA,
            "camera": self.camera,
            "frame": self.frame,
            "t": _r(self.t),
            "track_id": self.track_id,
            "box": [_r(v, 1) for v in self.box],
            "valence": _r(self.valence),
            "arousal": _r(self.arousal),
            "valence_raw": None if self.valence_raw is None else _r(self.valence_raw),
            "arousal_raw": None if self.arousal_raw is None else _r(self.arousal_raw),
            "variance": [_r(self.variance[0], 8), _r(self.variance[1], 8)],
            "model": self.model,
        }
        if self.wall_time is not None:
            rec["wall_time"] = _r(self.wall_time, 3)
        return rec


class TrackEventKind(enum.StrEnum):
    APPEARED = "appeared"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A track was confirmed (appeared) or deleted (lost)."""

    camera: str
    track_id: int
    kind: TrackEventKind
    frame: int
    t: float
    wall_time: float | None = None
    # Carried on LOST so sinks need no state: how long the track was seen (media time).
    duration_s: float | None = None
    # Why a LOST track ended when it was not lost by the tracker ("end_of_stream").
    reason: str | None = None

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "schema": EVENT_SCHEMA,
            "camera": self.camera,
            "track_id": self.track_id,
            "event": self.kind.value,
            "frame": self.frame,
            "t": _r(self.t),
        }
        if self.duration_s is not None:
            rec["duration_s"] = _r(self.duration_s, 3)
        if self.reason is not None:
            rec["reason"] = self.reason
        if self.wall_time is not None:
            rec["wall_time"] = _r(self.wall_time, 3)
        return rec


class CameraState(enum.StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A camera's connection state; ``detail`` never holds credentials."""

    camera: str
    state: CameraState
    wall_time: float
    detail: str = ""
    frames: int = 0
    skipped: int = 0
    reconnects: int = 0
    errors: int = 0

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": STATUS_SCHEMA,
            "camera": self.camera,
            "state": self.state.value,
            "detail": self.detail,
            "frames": self.frames,
            "skipped": self.skipped,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "wall_time": _r(self.wall_time, 3),
        }


@dataclass(frozen=True, slots=True)
class Description:
    """Categories and free text for one track.

    The deterministic fallback goes out first (``source="fallback"``); the LLM answer
    follows as an update with the same ``id`` (``source="llm"``).
    """

    id: str
    camera: str
    track_id: int
    t: float
    valence: float
    arousal: float
    basic: str
    complex: tuple[str, ...]
    text: str
    source: str  # "fallback" | "llm"
    model: str
    wall_time: float | None = None
    episode_id: str | None = None  # set when the description is about an Episode

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "schema": DESCRIPTION_SCHEMA,
            "id": self.id,
            "camera": self.camera,
            "track_id": self.track_id,
            "t": _r(self.t),
            "valence": _r(self.valence),
            "arousal": _r(self.arousal),
            "basic": self.basic,
            "complex": list(self.complex),
            "text": self.text,
            "source": self.source,
            "model": self.model,
        }
        if self.episode_id is not None:
            rec["episode_id"] = self.episode_id
        if self.wall_time is not None:
            rec["wall_time"] = _r(self.wall_time, 3)
        return rec


def clamp_va(x: float) -> float:
    """Clamp to [-1, 1]; non-finite becomes 0.0 (never publish a NaN)."""
    if not math.isfinite(x):
        return 0.0
    return -1.0 if x < -1.0 else 1.0 if x > 1.0 else float(x)


EPISODE_SCHEMA = "streamer.episode/1"
MOOD_SCHEMA = "streamer.mood/1"


@dataclass(frozen=True, slots=True)
class VAStats:
    """Mean, minimum and maximum of one of valence/arousal over an episode."""

    mean: float
    min: float
    max: float

    def to_record(self) -> dict[str, float]:
        return {"mean": _r(self.mean), "min": _r(self.min), "max": _r(self.max)}


@dataclass(frozen=True, slots=True)
class Episode:
    """A rule held for a track long enough (``started``), or stopped holding (``ended``).

    Times are media seconds. ``t`` is when the state was decided, ``t_start`` when the
    condition began to hold, ``t_end`` (ended only) when it stopped. ``reason`` says why
    an episode ended: ``cleared``, ``track_lost`` or ``end_of_stream``.
    """

    id: str
    camera: str
    track_id: int
    rule: str
    state: str  # "started" | "ended"
    t: float
    frame: int
    t_start: float
    t_end: float | None
    duration_s: float
    reason: str | None
    valence: VAStats
    arousal: VAStats
    wall_time: float | None = None
    # (t, valence, arousal) over the episode, on ``ended`` episodes whose rule asks for
    # a description: the describer's input. Never written out (not in the record).
    trajectory: tuple[tuple[float, float, float], ...] = field(
        default=(), repr=False, compare=False
    )

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "schema": EPISODE_SCHEMA,
            "id": self.id,
            "camera": self.camera,
            "track_id": self.track_id,
            "rule": self.rule,
            "state": self.state,
            "t": _r(self.t),
            "frame": self.frame,
            "t_start": _r(self.t_start),
            "t_end": None if self.t_end is None else _r(self.t_end),
            "duration_s": _r(self.duration_s, 3),
            "reason": self.reason,
            "valence": self.valence.to_record(),
            "arousal": self.arousal.to_record(),
        }
        if self.wall_time is not None:
            rec["wall_time"] = _r(self.wall_time, 3)
        return rec


@dataclass(frozen=True, slots=True)
class Mood:
    """The room mood of a camera: its confirmed tracks' smoothed VA at media time ``t``.

    With ``count == 0`` (no face tracked) the VA fields are None and ``quadrant`` is
    ``none``.
    """

    camera: str
    t: float
    frame: int
    count: int
    valence: float | None
    arousal: float | None
    valence_spread: float | None
    arousal_spread: float | None
    quadrant: str
    wall_time: float | None = None

    def to_record(self) -> dict[str, Any]:
        def opt(x: float | None) -> float | None:
            return None if x is None else _r(x)

        rec: dict[str, Any] = {
            "schema": MOOD_SCHEMA,
            "camera": self.camera,
            "t": _r(self.t),
            "frame": self.frame,
            "count": self.count,
            "valence": opt(self.valence),
            "arousal": opt(self.arousal),
            "valence_spread": opt(self.valence_spread),
            "arousal_spread": opt(self.arousal_spread),
            "quadrant": self.quadrant,
        }
        if self.wall_time is not None:
            rec["wall_time"] = _r(self.wall_time, 3)
        return rec


Message = VASample | TrackEvent | CameraStatus | Description | Episode | Mood
