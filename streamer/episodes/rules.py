"""Episode rules over smoothed VA trajectories: pure, deterministic, in media time.

Per track and rule a small state machine (see docs/episodes.md for the timeline)::

    idle ──TRUE──▶ pending(since) ──TRUE and t - since >= for_s──▶ open  (Episode "started")
      ▲                │ FALSE                                      │ FALSE for clear_after_s
      └────────────────┘◀───────────────────────────────────────────┘       (Episode "ended")

Each sample's condition is TRUE, FALSE or UNSURE. UNSURE (the filter had no accepted
measurement this frame, or its variance is above ``max_variance``) changes nothing: it
neither starts, extends nor ends an episode, and it is left out of the statistics. A track
that is lost ends its open episodes (``track_lost``); the end of a stream ends them with
``end_of_stream``. The same samples in the same order give the same episodes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streamer.episodes.config import EpisodeRule, EpisodesConfig
from streamer.messages import Episode, TrackEvent, VASample, VAStats

REASON_CLEARED = "cleared"
REASON_TRACK_LOST = "track_lost"
REASON_END_OF_STREAM = "end_of_stream"

STARTED = "started"
ENDED = "ended"

TRAJECTORY_POINTS = 256  # at most this many (t, v, a) kept per open episode (decimated)

TrackKey = tuple[str, int]
Trajectory = Sequence[tuple[float, float, float]]
EndHook = Callable[[Episode, Trajectory], None]


class Truth(enum.Enum):
    TRUE = 1
    FALSE = 0
    UNSURE = -1


def sample_truth(
    rule: EpisodeRule,
    valence: float,
    arousal: float,
    variance: tuple[float, float],
    measured: bool,
    max_variance: float,
) -> Truth:
    """Whether ``rule`` holds on one smoothed sample (UNSURE when the filter is unsure)."""
    if not measured or variance[0] > max_variance or variance[1] > max_variance:
        return Truth.UNSURE
    return Truth.TRUE if rule.when.holds(valence, arousal) else Truth.FALSE


@dataclass
class _Acc:
    """Running mean/min/max of valence and arousal."""

    n: int = 0
    sv: float = 0.0
    sa: float = 0.0
    vmin: float = 1.0
    vmax: float = -1.0
    amin: float = 1.0
    amax: float = -1.0

    def add(self, v: float, a: float) -> None:
        self.n += 1
        self.sv += v
        self.sa += a
        self.vmin, self.vmax = min(self.vmin, v), max(self.vmax, v)
        self.amin, self.amax = min(self.amin, a), max(self.amax, a)

    def merge(self, o: _Acc) -> None:
        if not o.n:
            return
        self.n += o.n
        self.sv += o.sv
        self.sa += o.sa
        self.vmin, self.vmax = min(self.vmin, o.vmin), max(self.vmax, o.vmax)
        self.amin, self.amax = min(self.amin, o.amin), max(self.amax, o.amax)

    def stats(self) -> tuple[VAStats, VAStats]:
        if not self.n:
            return VAStats(0.0, 0.0, 0.0), VAStats(0.0, 0.0, 0.0)
        return (
            VAStats(self.sv / self.n, self.vmin, self.vmax),
            VAStats(self.sa / self.n, self.amin, self.amax),
        )


@dataclass
class _RuleState:
    """One rule on one track: idle (since None), pending (since set) or open (id set)."""

    since: float | None = None
    id: str | None = None
    false_since: float | None = None
    acc: _Acc = field(default_factory=_Acc)
    clearing: _Acc = field(default_factory=_Acc)  # samples since false_since (tentative)
    trajectory: list[tuple[float, float, float]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def reset(self) -> None:
        self.since = self.id = self.false_since = None
        self.acc, self.clearing = _Acc(), _Acc()
        self.trajectory, self.stride, self.seen = [], 1, 0

    def keep(self, t: float, v: float, a: float) -> None:
        """Record a trajectory point; halve the resolution when the buffer is full."""
        if self.seen % self.stride == 0:
            self.trajectory.append((t, v, a))
            if len(self.trajectory) >= TRAJECTORY_POINTS:
                self.trajectory = self.trajectory[::2]
                self.stride *= 2
        self.seen += 1


@dataclass
class _Track:
    last_t: float
    rules: list[_RuleState]


def episode_id(camera: str, track_id: int, rule: str, t_start: float) -> str:
    """Deterministic id: camera, track, rule and the start in media milliseconds."""
    return f"{camera}:{track_id}:{rule}:{round(t_start * 1000)}"


class EpisodeEngine:
    """Every rule on every track of any number of cameras.

    Args:
        cfg: the ``episodes`` config section.
        on_end: called with each ended episode and its (decimated) trajectory.
    """

    def __init__(self, cfg: EpisodesConfig, on_end: EndHook | None = None) -> None:
        self.cfg = cfg
        self.rules = list(cfg.rules)
        self.on_end = on_end
        self._tracks: dict[TrackKey, _Track] = {}

    def open_count(self, camera: str, rule: str) -> int:
        """Open episodes of ``rule`` on ``camera``."""
        i = next(i for i, r in enumerate(self.rules) if r.name == rule)
        return sum(1 for (cam, _), tr in self._tracks.items() if cam == camera and tr.rules[i].id)

    def tracks(self) -> list[TrackKey]:
        """Tracks seen and not lost yet."""
        return list(self._tracks)

    def on_sample(self, s: VASample) -> list[Episode]:
        """Fold one smoothed sample in; returns episodes that started or ended."""
        key = (s.camera, s.track_id)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(0.0, [_RuleState() for _ in self.rules])
        # Decide on the values at the precision of the JSONL records, so that the rules
        # over a recording (``streamer episodes``) give exactly the replay's episodes.
        t, v, a = round(s.t, 6), round(s.valence, 6), round(s.arousal, 6)
        var = (round(s.variance[0], 8), round(s.variance[1], 8))
        measured = s.valence_raw is not None and s.arousal_raw is not None
        track.last_t = t
        out: list[Episode] = []
        for rule, st in zip(self.rules, track.rules, strict=True):
            truth = sample_truth(rule, v, a, var, measured, self.cfg.max_variance)
            if truth is Truth.UNSURE:
                continue
            ep = self._step(rule, st, s, t, v, a, truth is Truth.TRUE)
            if ep is not None:
                out.append(ep)
        return out

    def _step(
        self,
        rule: EpisodeRule,
        st: _RuleState,
        s: VASample,
        t: float,
        v: float,
        a: float,
        holds: bool,
    ) -> Episode | None:
        if st.id is None:  # idle or pending
            if not holds:
                if st.since is not None:
                    st.reset()
                return None
            if st.since is None:
                st.since = t
            st.acc.add(v, a)
            st.keep(t, v, a)
            if t - st.since < rule.for_s:
                return None
            st.id = episode_id(s.camera, s.track_id, rule.name, st.since)
            return self._episode(
                st, rule, s.camera, s.track_id, STARTED, t, s.frame, None, None, s.wall_time
            )
        st.keep(t, v, a)
        if holds:
            st.acc.merge(st.clearing)
            st.clearing = _Acc()
            st.acc.add(v, a)
            st.false_since = None
            return None
        if st.false_since is None:
            st.false_since = t
        st.clearing.add(v, a)
        if t - st.false_since < rule.clear_after_s:
            return None
        return self._end(
            st, rule, s.camera, s.track_id, t, s.frame, st.false_since, REASON_CLEARED, s.wall_time
        )

    def on_lost(self, event: TrackEvent) -> list[Episode]:
        """A track ended: close its open episodes (``event.reason`` or ``track_lost``)."""
        track = self._tracks.pop((event.camera, event.track_id), None)
        if track is None:
            return []
        reason = event.reason or REASON_TRACK_LOST
        out = []
        for rule, st in zip(self.rules, track.rules, strict=True):
            if st.id is None:
                continue
            t_end = st.false_since if st.false_since is not None else track.last_t
            out.append(
                self._end(
                    st,
                    rule,
                    event.camera,
                    event.track_id,
                    event.t,
                    event.frame,
                    t_end,
                    reason,
                    event.wall_time,
                )
            )
        return out

    def _end(
        self,
        st: _RuleState,
        rule: EpisodeRule,
        camera: str,
        track_id: int,
        t: float,
        frame: int,
        t_end: float,
        reason: str,
        wall_time: float | None,
    ) -> Episode:
        ep = self._episode(st, rule, camera, track_id, ENDED, t, frame, t_end, reason, wall_time)
        trajectory = st.trajectory
        st.reset()
        if self.on_end is not None:
            self.on_end(ep, trajectory)
        return ep

    def _episode(
        self,
        st: _RuleState,
        rule: EpisodeRule,
        camera: str,
        track_id: int,
        state: str,
        t: float,
        frame: int,
        t_end: float | None,
        reason: str | None,
        wall_time: float | None,
    ) -> Episode:
        assert st.id is not None and st.since is not None
        vs, as_ = st.acc.stats()
        return Episode(
            id=st.id,
            camera=camera,
            track_id=track_id,
            rule=rule.name,
            state=state,
            t=t,
            frame=frame,
            t_start=st.since,
            t_end=t_end,
            duration_s=max(0.0, (t if t_end is None else t_end) - st.since),
            reason=reason,
            valence=vs,
            arousal=as_,
            wall_time=wall_time,
        )
