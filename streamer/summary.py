"""Per-track summary of a run: duration, mean valence/arousal, dominant quadrant."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamer.bus import Subscription
from streamer.messages import Message, VASample

# Circumplex quadrants (Russell 1980), named by sign of valence and arousal.
QUADRANTS = {
    (True, True): "V+A+ excited/happy",
    (True, False): "V+A- calm/content",
    (False, True): "V-A+ tense/angry",
    (False, False): "V-A- sad/bored",
}


def quadrant(valence: float, arousal: float) -> str:
    return QUADRANTS[(valence >= 0.0, arousal >= 0.0)]


@dataclass
class TrackSummary:
    camera: str
    track_id: int
    first_t: float
    last_t: float
    n: int = 0
    sum_v: float = 0.0
    sum_a: float = 0.0
    quadrants: dict[str, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.last_t - self.first_t

    @property
    def mean_valence(self) -> float:
        return self.sum_v / max(self.n, 1)

    @property
    def mean_arousal(self) -> float:
        return self.sum_a / max(self.n, 1)

    @property
    def dominant_quadrant(self) -> str:
        return max(self.quadrants.items(), key=lambda kv: (kv[1], kv[0]))[0]


class Summarizer:
    """Folds VA samples into one :class:`TrackSummary` per (camera, track)."""

    def __init__(self) -> None:
        self.tracks: dict[tuple[str, int], TrackSummary] = {}

    def add(self, msg: Message) -> None:
        if not isinstance(msg, VASample):
            return
        key = (msg.camera, msg.track_id)
        s = self.tracks.get(key)
        if s is None:
            s = self.tracks[key] = TrackSummary(msg.camera, msg.track_id, msg.t, msg.t)
        s.last_t = msg.t
        s.n += 1
        s.sum_v += msg.valence
        s.sum_a += msg.arousal
        q = quadrant(msg.valence, msg.arousal)
        s.quadrants[q] = s.quadrants.get(q, 0) + 1

    async def consume(self, sub: Subscription) -> None:
        async for msg in sub:
            self.add(msg)
