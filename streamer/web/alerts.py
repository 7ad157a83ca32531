"""The dashboard's live episodes and room moods (numbers and text only).

:class:`EpisodeBoard` keeps the open episodes (the page shows them as alerts at the
top, with how long each has lasted in wall time), the last ended ones, and each
camera's latest room mood; :meth:`EpisodeBoard.to_json` is the ``episodes`` and
``mood`` part of ``/api/state``.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from streamer.messages import Episode, Message, Mood

ENDED_KEPT = 20  # ended episodes listed on the page
MAX_OPEN = 256  # open episodes kept at most (the oldest are forgotten first)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


class EpisodeBoard:
    """Open and recently ended episodes, and each camera's room mood."""

    def __init__(self) -> None:
        self.open: collections.OrderedDict[tuple[str, str], dict[str, Any]] = (
            collections.OrderedDict()
        )
        self.ended: collections.deque[dict[str, Any]] = collections.deque(maxlen=ENDED_KEPT)
        self.mood: dict[str, dict[str, Any]] = {}

    def add(self, msg: Message) -> bool:
        """Take ``msg`` when it is an episode or a mood; True when it was."""
        if isinstance(msg, Episode):
            self._episode(msg)
            return True
        if isinstance(msg, Mood):
            self.mood[msg.camera] = {
                "camera": msg.camera,
                "count": msg.count,
                "valence": _r(msg.valence, 4),
                "arousal": _r(msg.arousal, 4),
                "quadrant": msg.quadrant,
                "wall_time": _r(msg.wall_time if msg.wall_time is not None else time.time()),
            }
            return True
        return False

    def _episode(self, e: Episode) -> None:
        key = (e.camera, e.id)
        wall = e.wall_time if e.wall_time is not None else time.time()
        item = {
            "id": e.id,
            "camera": e.camera,
            "track_id": e.track_id,
            "rule": e.rule,
            "wall_start": _r(wall - (e.t - e.t_start)),
            "valence": _r(e.valence.mean, 4),
            "arousal": _r(e.arousal.mean, 4),
        }
        if e.state == "started":
            self.open[key] = item
            while len(self.open) > MAX_OPEN:
                self.open.popitem(last=False)
            return
        started = self.open.pop(key, None)
        if started is not None:
            item["wall_start"] = started["wall_start"]
        item["duration_s"] = _r(e.duration_s)
        item["reason"] = e.reason
        item["wall_end"] = _r(wall - (e.t - e.t_end) if e.t_end is not None else wall)
        self.ended.appendleft(item)

    def to_json(self, now: float) -> dict[str, Any]:
        """``{"episodes": {"open": [...], "ended": [...]}, "mood": [...]}``."""
        opened = [
            {**it, "for_s": _r(max(0.0, now - it["wall_start"]))} for it in self.open.values()
        ]
        opened.sort(key=lambda it: it["wall_start"])
        return {
            "episodes": {"open": opened, "ended": list(self.ended)},
            "mood": [self.mood[c] for c in sorted(self.mood)],
        }
