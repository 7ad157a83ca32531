"""The dashboard's view of a run, built from bus messages (numbers and text only).

:class:`DashboardState` keeps per camera its latest status and per track its latest
smoothed VA, a short trail and its latest description. :meth:`DashboardState.snapshot`
returns the JSON document served at ``/api/state`` and pushed on ``/events``; its schema
is ``streamer/web/schemas/state.json``.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from streamer.affect.models import FER_VA_NAME
from streamer.affect.projection import FER_CLASSES, FER_VA, category_hull
from streamer.annotate import FaceOverlay, description_label, track_colour_hex
from streamer.messages import (
    CameraState,
    CameraStatus,
    Description,
    Message,
    TrackEvent,
    TrackEventKind,
    VASample,
)

STATE_SCHEMA = "streamer.web.state/1"
TRAIL_S = 10.0  # media seconds of trail kept per track
TRAIL_STEP_S = 0.1  # at most one trail point per this many media seconds
TRAIL_POINTS = int(TRAIL_S / TRAIL_STEP_S) + 1
RATE_WINDOW_S = 3.0  # fps are averaged over about this many seconds
MAX_TRACKS = 256  # tracks kept at most (the oldest are forgotten first)
MAX_GONE = 4096  # lost tracks remembered (so that a late message cannot bring one back)


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def _fer_note() -> str:
    happy = FER_VA[FER_CLASSES.index("happy")]
    return (
        "Approximate valence/arousal: the embedded model classifies 7 expressions and "
        "reports the probability-weighted mean of fixed points, one per expression "
        "(Russell & Mehrabian). Its values never leave the outlined area spanned by those "
        "points and carry no intensity: a faint smile the classifier is sure of reads the "
        f"same as a broad one, happy's point ({happy[0]:+.2f}, {happy[1]:+.2f}). Read "
        f"{happy[0]:.2f} as 'looks happy', not '{happy[0] * 100:.0f} % happy'. "
        "FaceChannel (streamer models add facechannel) estimates VA directly."
    )


def model_limits(model: str) -> tuple[str, list[tuple[float, float]] | None]:
    """What ``model``'s VA cannot say, in words, and the polygon its values stay in
    ((valence, arousal) corners), or ("", None) for a dimensional model."""
    if model != FER_VA_NAME:
        return "", None
    hull = [(_r(v, 2), _r(a, 2)) for v, a in category_hull().tolist()]
    return _fer_note(), hull


@dataclass
class TrackView:
    camera: str
    track_id: int
    t: float = 0.0
    frame: int = 0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    valence: float = 0.0
    arousal: float = 0.0
    valence_raw: float | None = None
    arousal_raw: float | None = None
    variance: tuple[float, float] = (0.0, 0.0)
    trail: collections.deque[tuple[float, float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=TRAIL_POINTS)
    )
    description: Description | None = None

    def to_json(self) -> dict[str, Any]:
        d = self.description
        return {
            "camera": self.camera,
            "track_id": self.track_id,
            "colour": track_colour_hex(self.track_id),
            "t": _r(self.t, 3),
            "valence": _r(self.valence),
            "arousal": _r(self.arousal),
            "valence_raw": None if self.valence_raw is None else _r(self.valence_raw),
            "arousal_raw": None if self.arousal_raw is None else _r(self.arousal_raw),
            "variance": [_r(self.variance[0], 6), _r(self.variance[1], 6)],
            "box": [_r(v, 1) for v in self.box],
            "trail": list(self.trail),  # rounded when recorded: a snapshot stays cheap
            "description": None
            if d is None
            else {
                "text": d.text,
                "basic": d.basic,
                "complex": list(d.complex),
                "source": d.source,
                "model": d.model,
            },
        }


@dataclass
class CameraView:
    name: str
    state: str = CameraState.STARTING.value
    detail: str = ""
    since: float = field(default_factory=time.time)
    has_status: bool = False  # a live source reports statuses; a replayed file does not
    rates: collections.deque[tuple[float, int, int]] = field(
        default_factory=lambda: collections.deque(maxlen=64)
    )


class DashboardState:
    """Everything the dashboard shows; fed by :meth:`add`, read by :meth:`snapshot`.

    Args:
        cameras: configured camera names (shown before their first status).
        model: the VA model's name.
        approximate: whether the model is an approximation (shown on the page).
    """

    def __init__(self, cameras: list[str], model: str, approximate: bool) -> None:
        self.model = model
        self.approximate = approximate
        self.model_note, self.model_hull = model_limits(model)
        self.cameras: dict[str, CameraView] = {c: CameraView(c) for c in cameras}
        self.tracks: collections.OrderedDict[tuple[str, int], TrackView] = collections.OrderedDict()
        # Tracks whose `lost` event came: a description, an episode or a sample still in
        # flight for one of them must not bring it back as a ghost.
        self.gone: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self.version = 0  # bumped by every message: the broadcaster sends only when it moved
        self.finished = False  # a replay ended (the dashboard lingers on its last state)

    def camera(self, name: str) -> CameraView:
        cam = self.cameras.get(name)
        if cam is None:
            cam = self.cameras[name] = CameraView(name)
        return cam

    def add(self, msg: Message) -> None:
        self.version += 1
        if isinstance(msg, VASample):
            self._sample(msg)
        elif isinstance(msg, TrackEvent):
            key = (msg.camera, msg.track_id)
            if msg.kind is TrackEventKind.LOST:
                self.tracks.pop(key, None)
                self.gone[key] = None
                while len(self.gone) > MAX_GONE:
                    self.gone.popitem(last=False)
            else:
                self.gone.pop(key, None)  # a restarted tracker may use the id again
                self._track(key)
        elif isinstance(msg, CameraStatus):
            cam = self.camera(msg.camera)
            if cam.state != msg.state.value:
                cam.since = msg.wall_time
            cam.state, cam.detail, cam.has_status = msg.state.value, msg.detail, True
        elif isinstance(msg, Description):
            # Only for a track on the page: a description (often of an episode that ended
            # with the track) may arrive after the track's `lost` event.
            tr = self.tracks.get((msg.camera, msg.track_id))
            if tr is not None:
                tr.description = msg
        # Episodes and the room mood carry no per-track state the page shows.

    def finish(self) -> None:
        """The replay is over: its file camera reads ``stopped``, not ``online``."""
        self.finished = True
        self.version += 1

    def _track(self, key: tuple[str, int]) -> TrackView:
        tr = self.tracks.get(key)
        if tr is None:
            tr = self.tracks[key] = TrackView(*key)
            while len(self.tracks) > MAX_TRACKS:
                self.tracks.popitem(last=False)
        return tr

    def _sample(self, s: VASample) -> None:
        key = (s.camera, s.track_id)
        if key in self.gone:
            return
        self.camera(s.camera)
        tr = self._track(key)
        tr.t, tr.frame, tr.box = s.t, s.frame, s.box
        tr.valence, tr.arousal = s.valence, s.arousal
        tr.valence_raw, tr.arousal_raw, tr.variance = s.valence_raw, s.arousal_raw, s.variance
        if tr.trail and s.t < tr.trail[-1][0]:
            tr.trail.clear()  # a new stream session restarted media time
        if not tr.trail or s.t - tr.trail[-1][0] >= TRAIL_STEP_S:
            tr.trail.append((_r(s.t, 2), _r(s.valence, 3), _r(s.arousal, 3)))
        while tr.trail and s.t - tr.trail[0][0] > TRAIL_S:
            tr.trail.popleft()

    def overlays(self, camera: str, frame: int) -> list[FaceOverlay]:
        """What a preview of ``camera``'s frame ``frame`` draws (tracks seen in it)."""
        out = []
        for tr in self.tracks.values():
            if tr.camera == camera and tr.frame == frame:
                label = description_label(tr.description) if tr.description else ""
                out.append(FaceOverlay(tr.track_id, tr.box, tr.valence, tr.arousal, label))
        return out

    def camera_json(self, cam: CameraView, counters: dict[str, int], now: float) -> dict[str, Any]:
        """One camera's row; ``counters``: decoded, analysed, skipped, reconnects, and
        faces: the tracker's count of confirmed tracks after the last analysed frame."""
        decoded, analysed = counters["decoded"], counters["analysed"]
        cam.rates.append((now, decoded, analysed))
        while len(cam.rates) > 2 and now - cam.rates[1][0] >= RATE_WINDOW_S:
            cam.rates.popleft()
        t0, d0, a0 = cam.rates[0]
        span = now - t0
        state, detail = cam.state, cam.detail
        if not cam.has_status and analysed:
            state, detail = CameraState.ONLINE.value, "file"
            if self.finished:
                state, detail = CameraState.STOPPED.value, "replay finished"
        return {
            "name": cam.name,
            "state": state,
            "detail": detail,
            "since": _r(cam.since, 3),
            "decoded_fps": _r((decoded - d0) / span, 2) if span > 0 else 0.0,
            "analysed_fps": _r((analysed - a0) / span, 2) if span > 0 else 0.0,
            "frames_decoded": decoded,
            "frames_analysed": analysed,
            "skipped": counters["skipped"],
            "reconnects": counters["reconnects"],
            "faces": counters["faces"] if state == CameraState.ONLINE.value else 0,
        }
