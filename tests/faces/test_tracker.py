"""SORT tracker: stable ids, confirmation after N hits, deletion after max age, bounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from streamer.faces.config import TrackerConfig
from streamer.faces.tracker import Tracker, TrackerStep, iou_matrix
from streamer.messages import Detection

FPS = 30.0


def det(x: float, y: float, size: float = 80.0) -> Detection:
    return Detection((x, y, x + size, y + size), 0.9)


def run(tracker: Tracker, frames: Sequence[list[Detection] | None]) -> list[TrackerStep]:
    return [tracker.step(i / FPS, d) for i, d in enumerate(frames)]


def test_iou_matrix_table() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[1, 1 / 3, 0], [1, 1 / 3, 0]])
    assert iou_matrix(a[:0], b).shape == (0, 3)
    assert iou_matrix(a, b[:0]).shape == (2, 0)


def test_two_moving_faces_keep_their_ids() -> None:
    tr = Tracker(TrackerConfig(min_hits=3, max_age_s=0.3))
    frames = [[det(100 + 3 * i, 100), det(400 - 3 * i, 120)] for i in range(40)]
    steps = run(tr, frames)
    ids_a = {s.visible[0].id for s in steps[5:] if s.visible}
    assert len(tr.tracks) == 2
    assert ids_a <= {1, 2}
    by_x: dict[int, list[float]] = {}
    for s in steps[5:]:
        for t in s.visible:
            by_x.setdefault(t.id, []).append(t.box[0])
    # Track 1 moves right, track 2 moves left: ids did not swap.
    assert by_x[1] == sorted(by_x[1]) and by_x[2] == sorted(by_x[2], reverse=True)


@pytest.mark.parametrize("min_hits", [1, 3, 5])
def test_confirmation_after_min_hits(min_hits: int) -> None:
    tr = Tracker(TrackerConfig(min_hits=min_hits))
    steps = run(tr, [[det(100, 100)] for _ in range(10)])
    first_visible = next(i for i, s in enumerate(steps) if s.visible)
    assert first_visible == min_hits - 1
    assert sum(len(s.appeared) for s in steps) == 1


def test_track_deleted_after_max_age_and_reported_lost() -> None:
    tr = Tracker(TrackerConfig(min_hits=2, max_age_s=0.3))
    frames: list[list[Detection] | None] = [[det(100, 100)] for _ in range(10)]
    frames += [[] for _ in range(20)]
    steps = run(tr, frames)
    lost_at = [i for i, s in enumerate(steps) if s.lost]
    assert len(lost_at) == 1
    gone_for = (lost_at[0] - 9) / FPS
    assert 0.3 < gone_for <= 0.3 + 1.5 / FPS
    assert not steps[10].visible, "an unmatched face is not reported as visible"
    assert tr.tracks == []


def test_face_back_at_the_same_place_after_a_gap_is_a_new_track() -> None:
    tr = Tracker(TrackerConfig(min_hits=2, max_age_s=0.3))
    for i in range(10):
        tr.step(i / FPS, [det(100, 100)])
    step = tr.step(10 / FPS + 2.0, [det(100, 100)])  # 2 s outage, e.g. a reconnect
    assert [t.id for t in step.lost] == [1]
    steps = [tr.step(11 / FPS + 2.0 + i / FPS, [det(100, 100)]) for i in range(3)]
    assert {t.id for s in steps for t in s.visible} == {2}


def test_frames_without_detector_run_carry_tracks() -> None:
    tr = Tracker(TrackerConfig(min_hits=2))
    frames = [[det(100 + 2 * i, 100)] if i % 3 == 0 else None for i in range(30)]
    steps = run(tr, frames)
    visible_frames = [i for i, s in enumerate(steps) if s.visible]
    assert visible_frames == list(range(3, 30))
    assert len({t.id for s in steps for t in s.visible}) == 1


def test_unconfirmed_flicker_never_appears() -> None:
    tr = Tracker(TrackerConfig(min_hits=3, max_age_s=0.1))
    frames = [[det(100, 100)] if i % 10 == 0 else [] for i in range(50)]
    steps = run(tr, frames)
    assert not any(s.visible or s.appeared or s.lost for s in steps)


def test_face_churn_is_bounded_by_max_tracks() -> None:
    tr = Tracker(TrackerConfig(min_hits=1, max_age_s=0.1, max_tracks=4))
    rng = np.random.default_rng(0)
    for i in range(300):
        dets = [det(float(x), float(y), 40) for x, y in rng.uniform(0, 2000, size=(10, 2))]
        tr.step(i / FPS, dets)
        assert len(tr.tracks) <= 4
    assert tr.rejected_capacity > 0


def _prediction_errors(count_frames: bool) -> list[float]:
    """A face moving 4 px a frame, analysed on uneven gaps (an analysis grid, or frames
    a busy analysis missed) and detected on every other analysed frame: how far the
    predicted box is off on the frames without a detection."""
    tr = Tracker(TrackerConfig(min_hits=2, max_age_s=1.0))
    gaps = [1, 5, 2, 4, 3]
    k, errors = 0, []
    for i in range(40):
        gap = gaps[i % len(gaps)] if i else 1
        k += gap if i else 0
        x = 100 + 4 * k
        detections = [det(x, 100)] if i % 2 == 0 else None
        step = tr.step(k / FPS, detections, frames=gap if count_frames else 1)
        if detections is None and step.visible:
            errors.append(abs(step.visible[0].box[0] - x))
    assert len(tr.tracks) == 1 and tr.tracks[0].id == 1
    return errors


def test_a_face_is_predicted_over_the_frames_between_analysed_ones() -> None:
    assert max(_prediction_errors(True)[2:]) < 1.0  # px
    assert max(_prediction_errors(False)[2:]) > 5.0  # one step per analysed frame: off


def test_one_frame_steps_predict_exactly_as_before() -> None:
    a, b = Tracker(TrackerConfig(min_hits=1)), Tracker(TrackerConfig(min_hits=1))
    for k in range(6):
        a.step(k / FPS, [det(100 + 4 * k, 100)])
        b.step(k / FPS, [det(100 + 4 * k, 100)], frames=1)
    a.step(6 / FPS, None)
    b.step(6 / FPS, None, frames=1)
    assert a.tracks[0].box == b.tracks[0].box
    np.testing.assert_array_equal(a.tracks[0].kf.P, b.tracks[0].kf.P)
