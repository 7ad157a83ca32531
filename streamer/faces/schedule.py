"""When to run the face detector: every N frames, stretched while the scene is stable.

Detection is the costliest step per frame; the tracker carries faces between detector
runs. While every face is tracked well (at the last detector run every track matched a
detection, all tracks are confirmed, and none appeared or was lost) the interval grows
by one frame per stable run up to ``max_detect_every_n_frames``; any change (a new face,
a lost or unmatched track) drops it back to ``detect_every_n_frames`` at once, so a new
face waits at most ``max_detect_every_n_frames`` frames to be seen.

Across cameras, :class:`DetectorSlots` bounds how many detector runs happen at once: on
a small machine, many cameras whose runs fall on the same instant would otherwise all
wait for each other (the tail of the frame-to-result latency). A camera that finds every
slot busy defers its run to its next frame, tracking on prediction meanwhile; once the
run would leave more than ``max_detect_every_n_frames`` frames between runs it runs
without a slot, alongside the others, so the longest interval still bounds how long a
new face waits. (It used to wait for a slot there: with 16 to 24 cameras on two busy
cores, the cameras waiting held every analysis thread, and the share of frames analysed
fell from over 80 % to 20 to 57 %.) A slot held by a hung detector is free again after a
second.

Intervals count frames of the stream. A camera with an analysis rate (``analysis_fps``)
analyses only some of them: its detector runs on the first analysed frame on or after
the due one (at 5 fps from a 15 fps camera, a 2-frame interval runs the detector on
every analysed frame, a 4-frame interval on every second). Such a camera may move a due
run to its next analysed frame once before it is overdue.
"""

from __future__ import annotations

import os
import threading
import time

from streamer.faces.config import DetectorConfig
from streamer.faces.tracker import Tracker, TrackerStep

SLOT_STALE_S = 1.0  # s; a detector slot held longer than this is free again (hung run)


class DetectionSchedule:
    """Decides, frame by frame, whether the detector runs (one camera)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.base = cfg.detect_every_n_frames
        self.longest = max(self.base, cfg.max_detect_every_n_frames)
        self.interval = self.base
        self._since = 0  # frames since the last detector run; 0: run on the next frame
        # Frames from the last run to this frame (the first frame: as if a run had been
        # ``base`` frames before it), and from the previous analysed frame to this one.
        self._gap = self.base - 1
        self._step = 1

    def due(self, frames: int = 1) -> bool:
        """Whether the detector runs on this frame (call once per analysed frame).

        Args:
            frames: frames of the stream since the previous analysed frame (1 when every
                frame is analysed; more with an analysis rate): a run that fell due on a
                frame in between happens on this one.
        """
        self._gap += frames
        self._step = frames
        phase = self._since + frames - 1  # of this frame, from the last run
        run = self._since == 0 or phase >= self.interval
        self._since = (1 if run else phase + 1) % self.interval
        return run

    def defer(self) -> None:
        """The due run did not happen on this frame: it is due again on the next one."""
        self._since = 0

    @property
    def overdue(self) -> bool:
        """Deferring the due run again would leave more than the longest interval between
        runs (the bound a new face waits, and within the tracker's patience): it runs.
        The next analysed frame is taken to come as far after this one as this one came
        after the previous. At an analysis rate the bound is at least two analysed
        frames: a due run may move to the next analysed frame once (the tracker's
        patience is 3.5 analysis intervals there), never twice."""
        bound = self.longest if self._step == 1 else max(self.longest, 2 * self._step)
        return self._gap + self._step > bound

    def ran(self) -> None:
        """The detector ran on this frame."""
        self._gap = 0

    def observe(self, tracker: Tracker, step: TrackerStep) -> None:
        """Adapt the interval after a detector run's tracker step."""
        stable = (
            not step.appeared
            and not step.lost
            and bool(tracker.tracks)
            and all(tr.confirmed and tr.matched for tr in tracker.tracks)
        )
        interval = min(self.interval + 1, self.longest) if stable else self.base
        if interval != self.interval:
            self.interval = interval
            self._since %= interval


class DetectorSlots:
    """How many detector runs may happen at once across the cameras of one pipeline.

    A run that holds its slot longer than ``stale_s`` (a detector run takes milliseconds;
    a hung one never returns) stops counting: a hung detector cannot starve the other
    cameras, nor the analysis that replaces it, of detection.

    Args:
        slots: concurrent runs; 0 picks half the CPU cores (at least one).
        stale_s: a slot held this long is free again.
    """

    def __init__(self, slots: int = 0, stale_s: float = SLOT_STALE_S) -> None:
        self.slots = slots or max(1, (os.cpu_count() or 2) // 2)
        self.stale_s = stale_s
        self._cond = threading.Condition()
        self._held: dict[int, float] = {}  # token -> monotonic time taken
        self._next = 0

    def acquire(self, wait: bool) -> int | None:
        """A slot's token; without ``wait``, only when one is free now (else None)."""
        with self._cond:
            while True:
                now = time.monotonic()
                for token, since in list(self._held.items()):
                    if now - since > self.stale_s:
                        del self._held[token]
                if len(self._held) < self.slots:
                    self._next += 1
                    self._held[self._next] = now
                    return self._next
                if not wait:
                    return None
                oldest = min(self._held.values())
                self._cond.wait(timeout=max(0.001, oldest + self.stale_s - now))

    def release(self, token: int) -> None:
        """Give the slot of ``token`` back (a stale token is ignored)."""
        with self._cond:
            if self._held.pop(token, None) is not None:
                self._cond.notify()
