"""Empty rooms nearly free: a cheap change detector in front of the face detector.

A camera with no track runs the detector only when its picture changed since the
detector last looked, and at least every ``idle_detect_every_s`` seconds of media time
(a still face is found within that bound). The change detector compares a small grey
thumbnail of the frame (sampled to twice its size, then averaged 2x2, which evens out
sensor and compression noise; about 0.1 ms at 720p) with the thumbnail of the frame of
the last detector run: the picture changed when at least ``motion_area_share`` of its
pixels differ by more than ``motion_pixel_delta`` grey levels. Comparing with the last
run's frame, not with the previous frame, catches slow changes too (someone walking in
slowly adds up). Frigate's motion detector works the same way (a downscaled grey
difference against a threshold).

    gate = MotionGate(cfg.faces.detector)
    if gate.quiet(frame.image, frame.t):   # nothing changed, a run not yet due
        ...                                 # no detector run
    else:
        detections = detector.detect(frame.image)
        gate.ran(frame.t)
"""

from __future__ import annotations

import cv2
import numpy as np

from streamer.faces.config import DetectorConfig

THUMB_WIDTH_PX = 80  # width of the grey thumbnail compared (px); height keeps the aspect


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A small grey copy of a BGR ``image`` (H, W, 3) uint8: (h, 80) uint8."""
    h, w = image.shape[:2]
    tw = min(THUMB_WIDTH_PX, w)
    th = max(1, round(h * tw / w))
    sampled = cv2.resize(image, (2 * tw, 2 * th), interpolation=cv2.INTER_NEAREST)
    grey = cv2.cvtColor(sampled, cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.resize(grey, (tw, th), interpolation=cv2.INTER_AREA), np.uint8)


class MotionGate:
    """Whether an idle camera's due detector run can be left out (one camera)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.every_s = cfg.idle_detect_every_s
        self.delta = cfg.motion_pixel_delta
        self.share = cfg.motion_area_share
        self._ref: np.ndarray | None = None  # thumbnail at the last detector run
        self._ref_t = 0.0
        self._thumb: np.ndarray | None = None  # this frame's, kept until ran()

    @property
    def enabled(self) -> bool:
        return self.every_s is not None

    def changed(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether thumbnail ``a`` differs from ``b`` (same shape) enough to look."""
        moved = np.count_nonzero(cv2.absdiff(a, b) > self.delta)
        return bool(moved >= self.share * a.size)

    def quiet(self, image: np.ndarray, t: float) -> bool:
        """True when the detector can skip this due run of an idle camera: the picture
        has not changed since the last run, which was less than ``idle_detect_every_s``
        of media time ago. Call :meth:`ran` once the detector did run."""
        if self.every_s is None:
            return False
        thumb = thumbnail(image)
        self._thumb = thumb
        ref = self._ref
        if ref is None or ref.shape != thumb.shape or t - self._ref_t >= self.every_s:
            return False
        return not self.changed(thumb, ref)

    def ran(self, t: float) -> None:
        """The detector ran on the frame last passed to :meth:`quiet` (media time ``t``)."""
        if self._thumb is not None:
            self._ref, self._ref_t = self._thumb, t
            self._thumb = None

    def reset(self) -> None:
        """The camera has tracks: the next idle spell starts with a detector run."""
        self._ref = self._thumb = None
