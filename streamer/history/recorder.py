"""From bus messages to history rows (on the event loop, cheap, no database).

:class:`Recorder` turns each message into the rows it changes: an episode's row (its
``ended`` message updates the row its ``started`` made), its description (the LLM's
answer updates the fallback's row), a camera's status when it changed, and the open VA
and mood segments (:mod:`streamer.history.segments`), whose snapshots are handed on
at each commit while they fill and once more when they close. Rows are keyed, so a
newer version of a row replaces an older one still waiting for the database.

Wall times: a live message carries its own; a replay's message has none and is placed
at the replay's start plus its media time (``anchor``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from streamer.history.segments import MoodSegment, VASegment, segment_start
from streamer.messages import (
    CameraStatus,
    Description,
    Episode,
    Message,
    Mood,
    TrackEvent,
    TrackEventKind,
    VASample,
)

# Row kinds, in the order a batch writes them (an episode before its description).
KINDS = ("episode", "episode_description", "description", "status", "va", "mood")
BULK_KINDS = frozenset({"va", "mood"})


@dataclass(slots=True)
class Row:
    """One row to write: its kind, its key within the kind, its values."""

    kind: str
    key: tuple[Any, ...]
    values: dict[str, Any]


def description_json(d: Description) -> str:
    """The description of an episode as kept in its row."""
    return json.dumps(
        {
            "id": d.id,
            "text": d.text,
            "basic": d.basic,
            "complex": list(d.complex),
            "source": d.source,
            "model": d.model,
        },
        separators=(",", ":"),
    )


class Recorder:
    """Messages in, rows out (see the module docstring).

    Args:
        va_hz: VA bins per second.
        anchor: wall time of media time 0 for messages without a wall time (a replay's
            start); None: such messages are placed at the time they arrive.
    """

    def __init__(self, va_hz: float, anchor: float | None = None) -> None:
        self.bin_s = 1.0 / va_hz
        self.anchor = anchor
        self._va: dict[tuple[str, int], VASegment] = {}
        self._va_dirty: set[tuple[str, int]] = set()
        self._mood: dict[str, MoodSegment] = {}
        self._mood_dirty: set[str] = set()
        self._status: dict[str, str] = {}
        self._status_seq = 0
        self.cameras: set[str] = set()

    def wall(self, wall_time: float | None, t: float) -> float:
        if wall_time is not None:
            return wall_time
        if self.anchor is not None:
            return self.anchor + t
        return time.time()

    def add(self, msg: Message) -> list[Row]:
        """The rows ``msg`` completes now (open segments are handed on by :meth:`tick`)."""
        self.cameras.add(msg.camera)
        if isinstance(msg, VASample):
            return self._sample(msg)
        if isinstance(msg, Episode):
            return [self._episode(msg)]
        if isinstance(msg, Description):
            return self._description(msg)
        if isinstance(msg, Mood):
            return self._mood_row(msg)
        if isinstance(msg, CameraStatus):
            return self._camera_status(msg)
        if isinstance(msg, TrackEvent) and msg.kind is TrackEventKind.LOST:
            seg = self._va.pop((msg.camera, msg.track_id), None)
            self._va_dirty.discard((msg.camera, msg.track_id))
            return [] if seg is None else [self._va_row(msg.camera, msg.track_id, seg)]
        return []

    def tick(self) -> list[Row]:
        """Snapshots of the open segments that changed since the last tick."""
        out = [self._va_row(cam, track, self._va[(cam, track)]) for cam, track in self._va_dirty]
        out += [self._mood_seg_row(cam, self._mood[cam]) for cam in self._mood_dirty]
        self._va_dirty.clear()
        self._mood_dirty.clear()
        return out

    def close(self) -> list[Row]:
        """Every open segment (the end of the run)."""
        out = [self._va_row(cam, track, seg) for (cam, track), seg in self._va.items()]
        out += [self._mood_seg_row(cam, seg) for cam, seg in self._mood.items()]
        self._va.clear()
        self._mood.clear()
        self._va_dirty.clear()
        self._mood_dirty.clear()
        return out

    # ------------------------------------------------------------------ VA and mood

    def _sample(self, s: VASample) -> list[Row]:
        wall = self.wall(s.wall_time, s.t)
        key = (s.camera, s.track_id)
        seg = self._va.get(key)
        out: list[Row] = []
        start = segment_start(wall)
        if seg is not None and seg.start != start:
            out.append(self._va_row(s.camera, s.track_id, seg))
            seg = None
        if seg is None:
            seg = self._va[key] = VASegment(start, self.bin_s)
        seg.add(wall, s.valence, s.arousal)
        self._va_dirty.add(key)
        return out

    def _va_row(self, camera: str, track_id: int, seg: VASegment) -> Row:
        bins, n, v, a = seg.summary()
        return Row(
            "va",
            (camera, track_id, seg.start),
            {
                "camera": camera,
                "track_id": track_id,
                "start": seg.start,
                "bin_s": seg.bin_s,
                "bins": bins,
                "n": n,
                "valence_mean": round(v, 6),
                "arousal_mean": round(a, 6),
                "data": seg.pack(),
            },
        )

    def _mood_row(self, m: Mood) -> list[Row]:
        wall = self.wall(m.wall_time, m.t)
        start = segment_start(wall)
        seg = self._mood.get(m.camera)
        out: list[Row] = []
        if seg is not None and seg.start != start:
            out.append(self._mood_seg_row(m.camera, seg))
            seg = None
        if seg is None:
            seg = self._mood[m.camera] = MoodSegment(start)
        seg.add(
            wall,
            m.t,
            m.frame,
            m.count,
            m.quadrant,
            (m.valence, m.arousal, m.valence_spread, m.arousal_spread),
        )
        self._mood_dirty.add(m.camera)
        return out

    def _mood_seg_row(self, camera: str, seg: MoodSegment) -> Row:
        return Row(
            "mood",
            (camera, seg.start),
            {"camera": camera, "start": seg.start, "entries": len(seg.entries), "data": seg.pack()},
        )

    # ------------------------------------------------------------------ the rest

    def _episode(self, e: Episode) -> Row:
        wall = self.wall(e.wall_time, e.t)
        return Row(
            "episode",
            (e.id,),
            {
                "episode_id": e.id,
                "camera": e.camera,
                "track_id": e.track_id,
                "rule": e.rule,
                "state": e.state,
                "t": e.t,
                "frame": e.frame,
                "t_start": e.t_start,
                "t_end": e.t_end,
                "duration_s": e.duration_s,
                "reason": e.reason,
                "valence_mean": e.valence.mean,
                "valence_min": e.valence.min,
                "valence_max": e.valence.max,
                "arousal_mean": e.arousal.mean,
                "arousal_min": e.arousal.min,
                "arousal_max": e.arousal.max,
                "wall_time": e.wall_time,
                "wall_start": wall - (e.t - e.t_start),
                "wall_end": None if e.t_end is None else wall - (e.t - e.t_end),
            },
        )

    def _description(self, d: Description) -> list[Row]:
        wall = self.wall(d.wall_time, d.t)
        out = [
            Row(
                "description",
                (d.id,),
                {
                    "description_id": d.id,
                    "camera": d.camera,
                    "track_id": d.track_id,
                    "t": d.t,
                    "wall": wall,
                    "wall_time": d.wall_time,
                    "valence": d.valence,
                    "arousal": d.arousal,
                    "basic": d.basic,
                    "complex": json.dumps(list(d.complex)),
                    "text": d.text,
                    "source": d.source,
                    "model": d.model,
                    "episode_id": d.episode_id,
                },
            )
        ]
        if d.episode_id is not None:
            out.append(
                Row(
                    "episode_description",
                    (d.episode_id,),
                    {"episode_id": d.episode_id, "description": description_json(d)},
                )
            )
        return out

    def _camera_status(self, s: CameraStatus) -> list[Row]:
        if self._status.get(s.camera) == s.state.value:
            return []
        self._status[s.camera] = s.state.value
        self._status_seq += 1
        return [
            Row(
                "status",
                (self._status_seq,),
                {
                    "camera": s.camera,
                    "wall_time": s.wall_time,
                    "state": s.state.value,
                    "detail": s.detail,
                    "frames": s.frames,
                    "skipped": s.skipped,
                    "reconnects": s.reconnects,
                    "errors": s.errors,
                },
            )
        ]
