"""Room mood: the confirmed tracks of a camera summarised every ``interval_s`` media seconds.

A mood is computed when a frame is complete (the first sample of the next frame arrives,
or a track is lost) over the latest *sure* smoothed VA of every track not lost yet: a
sample the filter is unsure of (no measurement, or a variance above the episode rules'
``max_variance``: a new track's first samples) is ignored, as the rules ignore it, so a
face counts from its first sure sample on. When the last track of a camera is lost, one
mood with ``count: 0`` says the room is empty; then nothing until a face is tracked again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from streamer.circumplex import quadrant
from streamer.episodes.config import EpisodesConfig, MoodConfig
from streamer.episodes.rules import unsure
from streamer.messages import Mood, TrackEvent, VASample

NO_QUADRANT = "none"
DEFAULT_MAX_VARIANCE: float = EpisodesConfig.model_fields["max_variance"].default


@dataclass
class _Camera:
    frame: int = -1
    t: float = 0.0
    wall_time: float | None = None
    next_due: float | None = None
    latest: dict[int, tuple[float, float]] = field(default_factory=dict)


def room_mood(
    camera: str, t: float, frame: int, values: list[tuple[float, float]], wall: float | None
) -> Mood:
    """The mood of ``values`` (smoothed VA of each track) at media time ``t``."""
    n = len(values)
    if not n:
        return Mood(camera, t, frame, 0, None, None, None, None, NO_QUADRANT, wall)
    mv = sum(v for v, _ in values) / n
    ma = sum(a for _, a in values) / n
    sv = math.sqrt(sum((v - mv) ** 2 for v, _ in values) / n)
    sa = math.sqrt(sum((a - ma) ** 2 for _, a in values) / n)
    return Mood(camera, t, frame, n, mv, ma, sv, sa, quadrant(mv, ma).value, wall)


class MoodTracker:
    """Per camera room mood from the bus's VA samples and track events.

    Args:
        cfg: the ``mood`` section.
        max_variance: samples with a larger filter variance are unsure and ignored (the
            episode rules' ``max_variance``; its default without an ``episodes`` section).
    """

    def __init__(self, cfg: MoodConfig, max_variance: float = DEFAULT_MAX_VARIANCE) -> None:
        self.interval_s = cfg.interval_s
        self.max_variance = max_variance
        self._cams: dict[str, _Camera] = {}

    def _flush(self, cam: _Camera, name: str) -> list[Mood]:
        """The mood of the completed frame when one is due."""
        if cam.frame < 0 or not cam.latest:
            return []
        if cam.next_due is not None and cam.t < cam.next_due:
            return []
        cam.next_due = cam.t + self.interval_s
        return [room_mood(name, cam.t, cam.frame, list(cam.latest.values()), cam.wall_time)]

    def on_sample(self, s: VASample) -> list[Mood]:
        cam = self._cams.setdefault(s.camera, _Camera())
        out: list[Mood] = []
        if s.frame != cam.frame:
            out = self._flush(cam, s.camera)
            cam.frame, cam.t, cam.wall_time = s.frame, s.t, s.wall_time
        if not unsure(s, self.max_variance):
            cam.latest[s.track_id] = (s.valence, s.arousal)
        return out

    def on_lost(self, event: TrackEvent) -> list[Mood]:
        cam = self._cams.get(event.camera)
        if cam is None or event.track_id not in cam.latest:
            return []
        out = self._flush(cam, event.camera) if cam.frame <= event.frame else []
        del cam.latest[event.track_id]
        if not cam.latest:
            out.append(room_mood(event.camera, event.t, event.frame, [], event.wall_time))
            cam.next_due = None  # the next face gets a mood at once
            cam.frame = -1
        return out
