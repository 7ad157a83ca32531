"""When to run the face detector: every N frames, stretched while the scene is stable.

Detection is the costliest step per frame; the tracker carries faces between detector
runs. While every face is tracked well (at the last detector run every track matched a
detection, all tracks are confirmed, and none appeared or was lost) the interval grows
by one frame per stable run up to ``max_detect_every_n_frames``; any change (a new face,
a lost or unmatched track) drops it back to ``detect_every_n_frames`` at once, so a new
face waits at most ``max_detect_every_n_frames`` frames to be seen.
"""

from __future__ import annotations

from streamer.faces.config import DetectorConfig
from streamer.faces.tracker import Tracker, TrackerStep


class DetectionSchedule:
    """Decides, frame by frame, whether the detector runs (one camera)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.base = cfg.detect_every_n_frames
        self.longest = max(self.base, cfg.max_detect_every_n_frames)
        self.interval = self.base
        self._since = 0  # frames since the last detector run; 0: run on the next frame

    def due(self) -> bool:
        """Whether the detector runs on this frame (call once per frame)."""
        run = self._since == 0
        self._since = (self._since + 1) % self.interval
        return run

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
