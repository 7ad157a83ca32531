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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
        if v < self.vmin:
            self.vmin = v
        if v > self.vmax:
            self.vmax = v
        if a < self.amin:
            self.amin = a
        if a > self.amax:
            self.amax = a

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
    """One rule on one track, pending (``id`` None) or open; an idle rule has no state."""

    since: float
    id: str | None = None
    false_since: float | None = None
    acc: _Acc = field(default_factory=_Acc)
    clearing: _Acc = field(default_factory=_Acc)  # samples since false_since (tentative)
    trajectory: list[tuple[float, float, float]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

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
    rules: list[_RuleState | None]  # per rule; None = idle


def episode_id(camera: str, track_id: int, rule: str, t_start: float) -> str:
    """Deterministic id: camera, track, rule and the start in media milliseconds."""
    return f"{camera}:{track_id}:{rule}:{round(t_start * 1000)}"


def unsure(s: VASample, max_variance: float) -> bool:
    """Whether the filter is not sure of ``s``: no measurement in its frame (predicted
    only), or a variance of valence or arousal above ``max_variance``. Rules and the
    room mood ignore such samples."""
    if s.valence_raw is None or s.arousal_raw is None:
        return True
    v0, v1 = s.variance
    if v0 < max_variance - 1e-8 and v1 < max_variance - 1e-8:
        return False  # the common case, without rounding
    # at the records' precision, so a recording gives the replay's decisions
    return round(v0, 8) > max_variance or round(v1, 8) > max_variance


class EpisodeEngine:
    """Every rule on every track of any number of cameras.

    Args:
        cfg: the ``episodes`` config section.
        trajectories: ended episodes carry their (decimated) trajectory, the
            describer's input (:attr:`Episode.trajectory`).
    """

    def __init__(self, cfg: EpisodesConfig, trajectories: bool = False) -> None:
        self.cfg = cfg
        self.rules = list(cfg.rules)
        self._keep = trajectories
        self._tracks: dict[TrackKey, _Track] = {}
        inf = float("inf")
        # (valence low, valence high, arousal low, arousal high): holds when strictly inside.
        self._bounds = [
            (
                -inf if r.when.valence_above is None else r.when.valence_above,
                inf if r.when.valence_below is None else r.when.valence_below,
                -inf if r.when.arousal_above is None else r.when.arousal_above,
                inf if r.when.arousal_below is None else r.when.arousal_below,
            )
            for r in self.rules
        ]

    def open_count(self, camera: str, rule: str) -> int:
        """Open episodes of ``rule`` on ``camera``."""
        i = next(i for i, r in enumerate(self.rules) if r.name == rule)
        return sum(
            1
            for (cam, _), tr in self._tracks.items()
            if cam == camera and (st := tr.rules[i]) is not None and st.id is not None
        )

    def tracks(self) -> list[TrackKey]:
        """Tracks seen and not lost yet."""
        return list(self._tracks)

    def on_sample(self, s: VASample) -> list[Episode]:
        """Fold one smoothed sample in; returns episodes that started or ended."""
        key = (s.camera, s.track_id)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(0.0, [None] * len(self.rules))
        # Decide on the values at the precision of the JSONL records, so that the rules
        # over a recording (``streamer episodes``) give exactly the replay's episodes.
        t = round(s.t, 6)
        track.last_t = t
        if unsure(s, self.cfg.max_variance):
            return []  # unsure: no rule moves
        v, a = round(s.valence, 6), round(s.arousal, 6)
        out: list[Episode] = []
        states = track.rules
        for i, (vlo, vhi, alo, ahi) in enumerate(self._bounds):
            holds = vlo < v < vhi and alo < a < ahi
            st = states[i]
            if st is None:
                if not holds:
                    continue  # idle and false: the common case, nothing to do
                st = states[i] = _RuleState(since=t)
            ep, alive = self._step(self.rules[i], st, s, t, v, a, holds)
            if not alive:
                states[i] = None
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
    ) -> tuple[Episode | None, bool]:
        """Advance one pending or open rule; (episode or None, whether it stays)."""
        if self._keep:
            st.keep(t, v, a)
        if st.id is None:  # pending
            if not holds:
                return None, False
            st.acc.add(v, a)
            if t - st.since < rule.for_s:
                return None, True
            st.id = episode_id(s.camera, s.track_id, rule.name, st.since)
            ep = self._episode(
                st, rule, s.camera, s.track_id, STARTED, t, s.frame, None, None, s.wall_time
            )
            return ep, True
        if holds:
            if st.false_since is not None:
                st.acc.merge(st.clearing)
                st.clearing = _Acc()
                st.false_since = None
            st.acc.add(v, a)
            return None, True
        if st.false_since is None:
            st.false_since = t
        st.clearing.add(v, a)
        if t - st.false_since < rule.clear_after_s:
            return None, True
        ep = self._end(
            st, rule, s.camera, s.track_id, t, s.frame, st.false_since, REASON_CLEARED, s.wall_time
        )
        return ep, False

    def on_lost(self, event: TrackEvent) -> list[Episode]:
        """A track ended: close its open episodes (``event.reason`` or ``track_lost``)."""
        track = self._tracks.pop((event.camera, event.track_id), None)
        if track is None:
            return []
        reason = event.reason or REASON_TRACK_LOST
        out = []
        for rule, st in zip(self.rules, track.rules, strict=True):
            if st is None or st.id is None:
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
        if self._keep:
            ep = replace(ep, trajectory=tuple(st.trajectory))
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
        assert st.id is not None
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
