"""SORT-style multi-face tracker: constant-velocity Kalman boxes + IoU assignment.

Each person keeps one ``track_id`` across frames, so each person has one VA trajectory.
A track is *confirmed* after ``min_hits`` matched detections and deleted when it has
gone unmatched for ``max_age_s`` of media time. Between detector runs (detection every N
frames) confirmed tracks are carried on their Kalman prediction.

The box filter is SORT's 7-state model written out in numpy (:class:`BoxKalman`, the
same equations as filterpy's ``KalmanFilter`` with the Joseph-form update): importing
filterpy costs about a second (its package imports ``scipy.stats``), which would sit on
the path to the first frame. The VA smoothing (:mod:`streamer.smoothing`) stays on
filterpy, imported on first use.

Reference: Bewley et al., "Simple Online and Realtime Tracking", ICIP 2016.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from streamer.faces.config import TrackerConfig
from streamer.faces.crops import eye_angle
from streamer.messages import Detection

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1y1x2y2 boxes -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    return np.asarray(inter / union, dtype=np.float64)


def _box_to_z(box: Box) -> np.ndarray:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return np.array([x1 + w / 2, y1 + h / 2, w * h, w / max(h, 1e-6)], dtype=np.float64)


def _x_to_box(x: np.ndarray) -> Box:
    s, r = max(float(x[2]), 1e-6), max(float(x[3]), 1e-6)
    w = float(np.sqrt(s * r))
    h = s / max(w, 1e-6)
    return (float(x[0]) - w / 2, float(x[1]) - h / 2, float(x[0]) + w / 2, float(x[1]) + h / 2)


class BoxKalman:
    """SORT's constant-velocity box filter: state (cx, cy, area, aspect, vx, vy, va).

    Same matrices and equations as the reference SORT built on filterpy's
    ``KalmanFilter`` (predict ``x = Fx``, ``P = FPF' + Q``; update with the Joseph form).
    """

    _F = np.eye(7)
    _F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
    _H = np.eye(4, 7)
    _R = np.diag([1.0, 1.0, 10.0, 10.0])
    _Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
    _P0 = np.diag([10.0, 10.0, 10.0, 10.0, 10000.0, 10000.0, 10000.0])
    _I = np.eye(7)

    __slots__ = ("P", "x")

    def __init__(self, box: Box) -> None:
        self.x = np.zeros((7, 1))
        self.x[:4, 0] = _box_to_z(box)
        self.P = self._P0.copy()

    def predict(self, frames: int = 1) -> None:
        """Advance by ``frames`` frames of the stream (more than 1 when frames between
        were not analysed: the velocities are per frame, the noise grows with the gap)."""
        if frames == 1:
            f, q = self._F, self._Q
        else:
            f = np.eye(7)
            f[0, 4] = f[1, 5] = f[2, 6] = float(frames)
            q = self._Q * float(frames)
        self.x = f @ self.x
        self.P = f @ self.P @ f.T + q

    def update(self, z: np.ndarray) -> None:
        y = z.reshape(4, 1) - self._H @ self.x
        pht = self.P @ self._H.T
        s = self._H @ pht + self._R
        k = pht @ np.linalg.inv(s)
        self.x = self.x + k @ y
        ikh = self._I - k @ self._H
        self.P = ikh @ self.P @ ikh.T + k @ self._R @ k.T


def _box_filter(box: Box) -> BoxKalman:
    return BoxKalman(box)


@dataclass(eq=False)
class Track:
    """One face being followed."""

    id: int
    kf: BoxKalman
    first_t: float
    last_t: float  # media time of the last matched detection
    hits: int = 1
    confirmed: bool = False
    matched: bool = True  # matched at the most recent detector run
    angle: float = 0.0  # roll from the last landmarks, degrees
    box: Box = field(default=(0.0, 0.0, 0.0, 0.0))

    def predict(self, frames: int = 1) -> None:
        if frames * self.kf.x[6, 0] + self.kf.x[2, 0] <= 0:
            self.kf.x[6, 0] = 0.0  # area must not go negative
        self.kf.predict(frames)
        self.box = _x_to_box(self.kf.x[:, 0])


@dataclass(frozen=True)
class TrackerStep:
    """What one frame did to the tracks.

    Attributes:
        visible: confirmed tracks whose face is in this frame (matched at the latest
            detector run), with the box to crop.
        appeared: tracks confirmed in this frame.
        lost: tracks deleted in this frame.
    """

    visible: list[Track]
    appeared: list[Track]
    lost: list[Track]


class Tracker:
    """SORT tracker for one camera."""

    def __init__(self, cfg: TrackerConfig, max_age_s: float | None = None) -> None:
        self.cfg = cfg
        # A camera with an analysis rate keeps a track a little longer (see the pipeline).
        self.max_age_s = cfg.max_age_s if max_age_s is None else max_age_s
        self.tracks: list[Track] = []
        self._next_id = 1
        self.rejected_capacity = 0  # detections not tracked because of max_tracks

    def step(self, t: float, detections: list[Detection] | None, frames: int = 1) -> TrackerStep:
        """Advance to media time ``t``.

        Args:
            t: media time of the frame in seconds.
            detections: this frame's faces, or None when the detector did not run on it
                (tracks are then carried on their prediction).
            frames: frames of the stream since the previous step (more than 1 when the
                frames between were not analysed).
        """
        for tr in self.tracks:
            tr.predict(frames)
        # Age out first: a face returning after a gap longer than max_age_s (a camera
        # reconnect) starts a new track instead of reviving the stale one.
        max_age = self.max_age_s
        lost = [tr for tr in self.tracks if t - tr.last_t > max_age]
        if lost:
            self.tracks = [tr for tr in self.tracks if t - tr.last_t <= max_age]
        appeared: list[Track] = []
        if detections is not None:
            appeared = self._associate(t, detections)
        visible = [tr for tr in self.tracks if tr.confirmed and tr.matched]
        return TrackerStep(visible, appeared, [tr for tr in lost if tr.confirmed])

    def _associate(self, t: float, detections: list[Detection]) -> list[Track]:
        det_boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        trk_boxes = np.array([tr.box for tr in self.tracks], dtype=np.float64).reshape(-1, 4)
        iou = iou_matrix(trk_boxes, det_boxes)
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if iou.size:
            from scipy.optimize import linear_sum_assignment  # deferred: import cost

            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.cfg.iou_threshold:
                    matched_t.add(int(r))
                    matched_d.add(int(c))
                    self._update(self.tracks[r], t, detections[c])
        appeared = []
        for i, tr in enumerate(self.tracks):
            if i in matched_t:
                if not tr.confirmed and tr.hits >= self.cfg.min_hits:
                    tr.confirmed = True
                    appeared.append(tr)
            else:
                tr.matched = False
        for j, det in enumerate(detections):
            if j in matched_d:
                continue
            if len(self.tracks) >= self.cfg.max_tracks:
                self.rejected_capacity += 1
                continue
            tr = Track(
                self._next_id,
                _box_filter(det.box),
                first_t=t,
                last_t=t,
                angle=eye_angle(det.landmarks),
                box=det.box,
            )
            self._next_id += 1
            if self.cfg.min_hits <= 1:
                tr.confirmed = True
                appeared.append(tr)
            self.tracks.append(tr)
        return appeared

    @staticmethod
    def _update(tr: Track, t: float, det: Detection) -> None:
        tr.kf.update(_box_to_z(det.box))
        tr.box = det.box  # crop the detector's box; the filter only bridges gaps
        tr.last_t = t
        tr.hits += 1
        tr.matched = True
        if det.landmarks is not None:
            tr.angle = eye_angle(det.landmarks)
