"""One track's valence/arousal, summarised: the one :class:`TrackSummary` of the package.

Two producers fill it:

- :func:`summarize` folds a window of ``(t, valence, arousal)`` samples (what a prompt
  and the fallback description say about a track's recent affect);
- :class:`Summarizer` folds every :class:`~streamer.messages.VASample` of a run into one
  summary per (camera, track) in constant memory (the replay's closing table).

Quadrants are named by :mod:`streamer.circumplex`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamer.bus import Subscription
from streamer.circumplex import quadrant
from streamer.messages import Message, VASample, clamp_va


@dataclass(frozen=True, slots=True)
class TrackSummary:
    """The affect of one track over a window of media time (or a whole run).

    Attributes:
        n: samples summarised.
        span_s: media seconds from the first to the last sample.
        valence, arousal: the current (latest smoothed) value.
        mean_valence, mean_arousal: means over the samples.
        trend_valence, trend_arousal: least-squares slope, VA units per second.
        spread_valence, spread_arousal: population standard deviation.
        first_t: media time of the first sample (seconds).
        dominant_quadrant: the circumplex quadrant most samples fell in (ties: the
            name last in alphabetical order); "" when not counted.
    """

    n: int
    span_s: float
    valence: float
    arousal: float
    mean_valence: float
    mean_arousal: float
    trend_valence: float
    trend_arousal: float
    spread_valence: float
    spread_arousal: float
    first_t: float = 0.0
    dominant_quadrant: str = ""

    @classmethod
    def point(cls, valence: float, arousal: float) -> TrackSummary:
        """A summary of one observation (no trend, no spread), e.g. for evaluation rows."""
        v, a = clamp_va(valence), clamp_va(arousal)
        return cls(1, 0.0, v, a, v, a, 0.0, 0.0, 0.0, 0.0, 0.0, quadrant(v, a).value)


def _slope(ts: Sequence[float], xs: Sequence[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt = sum(ts) / n
    mx = sum(xs) / n
    den = sum((t - mt) ** 2 for t in ts)
    if den <= 1e-12:
        return 0.0
    s = sum((t - mt) * (x - mx) for t, x in zip(ts, xs, strict=True)) / den
    return s if math.isfinite(s) else 0.0


def _dominant(counts: Counter[str]) -> str:
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else ""


def summarize(samples: Sequence[tuple[float, float, float]]) -> TrackSummary:
    """Summarise ``(t, valence, arousal)`` samples, oldest first (at least one).

    Raises:
        ValueError: when ``samples`` is empty.
    """
    if not samples:
        raise ValueError("summarize needs at least one sample")
    ts = [s[0] for s in samples]
    vs = [clamp_va(s[1]) for s in samples]
    as_ = [clamp_va(s[2]) for s in samples]
    n = len(samples)
    mv, ma = sum(vs) / n, sum(as_) / n
    sv = math.sqrt(sum((v - mv) ** 2 for v in vs) / n)
    sa = math.sqrt(sum((a - ma) ** 2 for a in as_) / n)
    counts = Counter(quadrant(v, a).value for v, a in zip(vs, as_, strict=True))
    return TrackSummary(
        n=n,
        span_s=max(0.0, ts[-1] - ts[0]),
        valence=vs[-1],
        arousal=as_[-1],
        mean_valence=mv,
        mean_arousal=ma,
        trend_valence=_slope(ts, vs),
        trend_arousal=_slope(ts, as_),
        spread_valence=sv,
        spread_arousal=sa,
        first_t=ts[0],
        dominant_quadrant=_dominant(counts),
    )


@dataclass
class _Running:
    """Sums of one track's samples (times relative to the first, for precision)."""

    first_t: float
    last_t: float = 0.0
    last_v: float = 0.0
    last_a: float = 0.0
    n: int = 0
    s_t: float = 0.0
    s_tt: float = 0.0
    s_v: float = 0.0
    s_a: float = 0.0
    s_vv: float = 0.0
    s_aa: float = 0.0
    s_tv: float = 0.0
    s_ta: float = 0.0
    quadrants: Counter[str] = field(default_factory=Counter)

    def add(self, t: float, v: float, a: float) -> None:
        v, a = clamp_va(v), clamp_va(a)
        dt = t - self.first_t
        self.last_t, self.last_v, self.last_a = t, v, a
        self.n += 1
        self.s_t += dt
        self.s_tt += dt * dt
        self.s_v += v
        self.s_a += a
        self.s_vv += v * v
        self.s_aa += a * a
        self.s_tv += dt * v
        self.s_ta += dt * a
        self.quadrants[quadrant(v, a).value] += 1

    def summary(self) -> TrackSummary:
        n = max(self.n, 1)
        mv, ma = self.s_v / n, self.s_a / n
        den = n * self.s_tt - self.s_t**2

        def slope(s_tx: float, s_x: float) -> float:
            if self.n < 2 or den <= 1e-12:
                return 0.0
            s = (n * s_tx - self.s_t * s_x) / den
            return s if math.isfinite(s) else 0.0

        return TrackSummary(
            n=self.n,
            span_s=max(0.0, self.last_t - self.first_t),
            valence=self.last_v,
            arousal=self.last_a,
            mean_valence=mv,
            mean_arousal=ma,
            trend_valence=slope(self.s_tv, self.s_v),
            trend_arousal=slope(self.s_ta, self.s_a),
            spread_valence=math.sqrt(max(0.0, self.s_vv / n - mv * mv)),
            spread_arousal=math.sqrt(max(0.0, self.s_aa / n - ma * ma)),
            first_t=self.first_t,
            dominant_quadrant=_dominant(self.quadrants),
        )


class Summarizer:
    """Folds VA samples into one :class:`TrackSummary` per (camera, track), O(1) memory
    per track."""

    def __init__(self) -> None:
        self._tracks: dict[tuple[str, int], _Running] = {}

    def add(self, msg: Message) -> None:
        if not isinstance(msg, VASample):
            return
        key = (msg.camera, msg.track_id)
        run = self._tracks.get(key)
        if run is None:
            run = self._tracks[key] = _Running(first_t=msg.t)
        run.add(msg.t, msg.valence, msg.arousal)

    @property
    def tracks(self) -> dict[tuple[str, int], TrackSummary]:
        """The summary of every track seen, keyed by (camera, track id), in key order."""
        return {key: self._tracks[key].summary() for key in sorted(self._tracks)}

    async def consume(self, sub: Subscription) -> None:
        async for msg in sub:
            self.add(msg)


__all__ = ["Summarizer", "TrackSummary", "summarize"]
