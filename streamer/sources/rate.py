"""The analysis rate of a camera: which decoded frames are analysed, in media time.

With ``analysis_fps: r`` a camera analyses at most ``r`` frames per second of media time,
whatever it sends. Media time is cut into slots of ``1 / r`` seconds (slot ``k`` starts
at ``k / r``); the first good frame of each slot is analysed, every other frame of the
slot is *skipped by rate*: decoded where the codec needs it (later pictures are
predicted from it) but never converted, handed over or analysed, and counted apart from
frames lost to a busy analysis or to damage. The same file gives the same frames at the
same rate every time (replay stays deterministic); a damaged frame that would have been
the slot's passes its turn to the next good frame of the slot.

A grid may be shifted by a *phase*, a fraction of a slot: slot ``k`` then starts at
``(k + phase) / r``. Cameras that start together have media clocks that start together,
so with one grid their due frames would all arrive in the same few milliseconds and
queue for the analysis; a live run gives camera ``i`` of ``n`` the phase ``i / n``, which
spreads their analysis evenly over each slot (at 5 fps, 32 cameras on 2 cores: p95
latency 179 ms with one grid, see ``docs/performance.md``).

Non-reference pictures (most B-frames) are predicted from others but never predict
anything themselves. One that is sure to be off the grid (an earlier picture of its slot
was already read) is not even decoded: its packet goes to the decoder with
``skip_frame = NONREF`` (a reference picture in such a packet is still decoded, so
nothing that later pictures need is lost). The frame index of every picture stays the
one a full decode gives.

    grid = AnalysisGrid(5.0)
    grid.due(t)          # True for the first frame of each 0.2 s slot
    AnalysisGrid(5.0, phase=0.5)  # slots start at 0.1 s, 0.3 s, ...
"""

from __future__ import annotations

import bisect
import math
from collections import deque

SLOT_EPS = 1e-6  # slots; a frame timed this close before a slot's start belongs to it
SLOTS_REMEMBERED = 64  # slots whose earliest packet is remembered (B-frame reordering)

__all__ = ["AnalysisGrid", "spread_phase"]


def spread_phase(index: int, count: int) -> float:
    """The grid phase of camera ``index`` (0 to ``count - 1``) of ``count`` started
    together: evenly spread over a slot."""
    return index / count


class AnalysisGrid:
    """Which frames of one source are on its analysis grid (media time).

    Args:
        fps: analysed frames per second of media time at most (None: every frame).
        phase: where the slots start, a fraction of a slot in [0, 1).
    """

    def __init__(self, fps: float | None, phase: float = 0.0) -> None:
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"analysis fps must be > 0, got {fps}")
        if not 0.0 <= phase < 1.0:
            raise ValueError(f"grid phase must be in [0, 1), got {phase}")
        self.fps = fps
        self.phase = phase
        self._last_slot: int | None = None  # slot of the last frame analysed
        # Earliest pts read so far in each recent slot, in slot order (skip_frame).
        self._first_pts: dict[int, int] = {}
        self._slots: deque[int] = deque()
        self._pending: list[int] = []  # sorted pts of packets sent with skip_frame=NONREF

    @property
    def every_frame(self) -> bool:
        return self.fps is None

    @property
    def pending(self) -> bool:
        """Whether pictures sent with ``skip_frame`` may still come out or be missing."""
        return bool(self._pending)

    def slot(self, t: float) -> int:
        """The slot of media time ``t`` (seconds)."""
        assert self.fps is not None
        return math.floor(t * self.fps - self.phase + SLOT_EPS)

    def due(self, t: float) -> bool:
        """Whether the good frame at media time ``t`` is analysed (call once per good
        frame, in presentation order); it then owns its slot."""
        if self.fps is None:
            return True
        slot = self.slot(t)
        if self._last_slot is not None and slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True

    # ---- skip_frame: packets whose picture is off the grid for sure -----------------

    def packet_off_grid(self, pts: int, t: float) -> bool:
        """Whether the picture of a packet (presentation time ``t``, stamp ``pts``) is
        sure to be off the grid: an earlier picture of its slot was already read.

        Packets come in decode order; remembering each recent slot's earliest stamp is
        enough, since the earliest picture of a slot is never declared off the grid."""
        if self.fps is None:
            return False
        slot = self.slot(t)
        first = self._first_pts.get(slot)
        if first is None:
            self._first_pts[slot] = pts
            self._slots.append(slot)
            while len(self._slots) > SLOTS_REMEMBERED:
                self._first_pts.pop(self._slots.popleft(), None)
            return False
        if pts < first:
            self._first_pts[slot] = pts
            return False
        return pts > first

    def new_session(self) -> None:
        """A new decoding session (a reconnect): its stamps start afresh."""
        self._first_pts.clear()
        self._slots.clear()
        self._pending.clear()

    def sent_nonref(self, pts: int) -> None:
        """A packet went to the decoder with ``skip_frame = NONREF``: its picture may never
        come out (see :meth:`discarded_before`)."""
        bisect.insort(self._pending, pts)

    def discarded_before(self, pts: int | None) -> int:
        """How many pictures sent with ``skip_frame`` were discarded by the decoder before
        the picture stamped ``pts`` came out (None: the end of the stream: all left).

        Pictures come out in presentation order, so a pending stamp below ``pts`` that
        never came out was discarded; one equal to ``pts`` was a reference picture the
        decoder kept."""
        if pts is None:
            n = len(self._pending)
            self._pending.clear()
            return n
        i = bisect.bisect_left(self._pending, pts)
        kept = i < len(self._pending) and self._pending[i] == pts
        del self._pending[: i + kept]
        return i
