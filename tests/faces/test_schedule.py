"""Detector runs shared across cameras: a busy slot defers a camera's run, never past
the longest interval."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamer.config import AnalysisConfig, AppConfig
from streamer.faces.config import DetectorConfig, TrackerConfig
from streamer.faces.schedule import DetectionSchedule, DetectorSlots
from streamer.faces.tracker import Tracker, TrackerStep
from streamer.messages import Detection, Frame
from streamer.pipeline import CameraAnalyzer, CameraStats

FACE = Detection((100.0, 100.0, 200.0, 220.0), 0.9, None)


class CountingDetector:
    """One face on every frame; remembers the frames it ran on."""

    def __init__(self) -> None:
        self.frames: list[int] = []

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.frames.append(int(image[0, 0, 0]))
        return [FACE]


def _analyzer(slots: DetectorSlots, every: int = 2, longest: int = 4) -> CameraAnalyzer:
    det = DetectorConfig(detect_every_n_frames=every, max_detect_every_n_frames=longest)
    cfg = AppConfig().model_copy(
        update={
            "faces": AppConfig().faces.model_copy(
                update={"detector": det, "tracker": TrackerConfig(min_hits=1)}
            )
        }
    )
    detector = CountingDetector()
    return CameraAnalyzer("cam", cfg, detector, "m", CameraStats("cam"), slots=slots)


def _frame(k: int) -> Frame:
    image = np.full((240, 320, 3), k % 256, np.uint8)  # the detector reads k back
    return Frame("cam", k, k / 15.0, image)


def test_slots_default_to_half_the_cores_and_at_least_one() -> None:
    assert DetectorSlots(3).slots == 3
    assert DetectorSlots(0).slots >= 1


class WatchedSlots(DetectorSlots):
    """Slots that say when a camera starts waiting for one."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        self.waiting = threading.Event()

    def acquire(self, wait: bool) -> int | None:
        if wait:
            self.waiting.set()
        return super().acquire(wait)


def test_an_overdue_run_goes_ahead_without_waiting_for_a_slot() -> None:
    slots = WatchedSlots(1)
    analyzer = _analyzer(slots)
    detector = analyzer.detector
    assert isinstance(detector, CountingDetector)
    analyzer.prepare(_frame(0))  # runs: the slot is free
    assert detector.frames == [0]
    held = slots.acquire(wait=False)  # other cameras keep the slot busy from now on
    assert held is not None
    analyzer.prepare(_frame(1))  # not due (every 2nd frame)
    analyzer.prepare(_frame(2))  # due, slot busy: deferred
    analyzer.prepare(_frame(3))  # due again, still busy: deferred
    assert detector.frames == [0]
    assert analyzer.stats.detections_deferred == 2
    # Frame 4 is 4 frames after the last run: deferring again would pass the longest
    # interval, so it runs, without the slot and without waiting for it (waiting held
    # the analysis threads of many cameras behind the one slot).
    analyzer.prepare(_frame(4))
    assert detector.frames == [0, 4]
    assert not slots.waiting.is_set()
    assert analyzer.stats.detections_deferred == 2
    slots.release(held)
    assert slots.acquire(wait=False) is not None  # the run took no slot, released none


def test_while_a_slot_is_free_runs_follow_the_schedule() -> None:
    analyzer = _analyzer(DetectorSlots(1), every=2, longest=2)
    for k in range(10):
        analyzer.prepare(_frame(k))
    detector = analyzer.detector
    assert isinstance(detector, CountingDetector)
    assert detector.frames == [0, 2, 4, 6, 8]
    assert analyzer.stats.detections_deferred == 0


@pytest.mark.parametrize("interval", [1, 2, 3])
def test_the_longest_interval_is_never_exceeded_with_a_busy_slot(interval: int) -> None:
    sched = DetectionSchedule(
        DetectorConfig(detect_every_n_frames=interval, max_detect_every_n_frames=4)
    )
    runs = []
    for k in range(40):
        if sched.due():
            if sched.overdue:  # the camera waits for the slot: it runs on this frame
                sched.ran()
                runs.append(k)
            else:
                sched.defer()  # the slot is always busy otherwise
    assert runs and max(np.diff([0, *runs])) <= 4


def test_a_slot_held_by_a_hung_run_is_free_again_after_stale_s() -> None:
    slots = DetectorSlots(1, stale_s=0.2)
    hung = slots.acquire(wait=False)  # its detector never returns
    assert hung is not None
    assert slots.acquire(wait=False) is None
    t0 = time.monotonic()
    token = slots.acquire(wait=True)
    assert token is not None and 0.15 <= time.monotonic() - t0 < 5.0
    slots.release(hung)  # the hung run returns at last: it frees nothing
    assert slots.acquire(wait=False) is None
    slots.release(token)
    assert slots.acquire(wait=False) is not None


class _OldSchedule:
    """The schedule before analysis rates (every frame analysed), kept as the reference
    the frame-by-frame behaviour must still match."""

    def __init__(self, base: int, longest: int) -> None:
        self.base, self.longest = base, max(base, longest)
        self.interval, self._since, self.late = base, 0, 0

    def due(self) -> bool:
        run = self._since == 0
        self._since = (self._since + 1) % self.interval
        return run

    def defer(self) -> None:
        self._since = 0
        self.late += 1

    @property
    def overdue(self) -> bool:
        return self.interval + self.late >= self.longest

    def ran(self) -> None:
        self.late = 0

    def set_interval(self, stable: bool) -> None:
        interval = min(self.interval + 1, self.longest) if stable else self.base
        if interval != self.interval:
            self.interval = interval
            self._since %= interval


@pytest.mark.parametrize("seed", range(6))
def test_every_frame_analysed_the_schedule_runs_as_it_always_did(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base, longest = int(rng.integers(1, 4)), int(rng.integers(1, 7))
    old = _OldSchedule(base, longest)
    new = DetectionSchedule(
        DetectorConfig(detect_every_n_frames=base, max_detect_every_n_frames=longest)
    )
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.step(0.0, [FACE])  # one confirmed, matched track: "stable" when nothing happens
    calm = TrackerStep(tracker.tracks, [], [])
    change = TrackerStep(tracker.tracks, tracker.tracks, [])
    for _ in range(300):
        due = old.due()
        assert new.due() == due
        if not due:
            continue
        assert new.overdue == old.overdue
        if rng.random() < 0.3 and not old.overdue:
            old.defer()
            new.defer()
            continue
        old.ran()
        new.ran()
        stable = bool(rng.random() < 0.7)
        old.set_interval(stable)
        new.observe(tracker, calm if stable else change)
        assert new.interval == old.interval


@pytest.mark.parametrize(
    ("every", "longest", "step", "runs"),
    [
        (2, 2, 3, [0, 3, 6, 9, 12, 15]),  # due every 2 frames: every analysed frame
        (4, 4, 3, [0, 6, 12]),  # due at 4, 8, 12: on the analysed frames 6, 9, 12 -> 6, 12
        (2, 2, 1, [0, 2, 4, 6, 8, 10, 12, 14]),
        (6, 6, 2, [0, 6, 12]),
    ],
)
def test_with_a_rate_a_run_due_between_analysed_frames_happens_on_the_next_one(
    every: int, longest: int, step: int, runs: list[int]
) -> None:
    sched = DetectionSchedule(
        DetectorConfig(detect_every_n_frames=every, max_detect_every_n_frames=longest)
    )
    got = [k for k in range(0, 16, step) if sched.due(step if k else 1)]
    assert got == runs


def test_a_deferred_run_at_a_rate_waits_once_the_longest_interval_in_frames_is_reached() -> None:
    sched = DetectionSchedule(DetectorConfig(detect_every_n_frames=2, max_detect_every_n_frames=6))
    assert sched.due(1)
    sched.ran()
    assert sched.due(3)  # frame 3: due (at 2), the slot is busy
    assert not sched.overdue  # deferred to frame 6: 6 frames between runs at most
    sched.defer()
    assert sched.due(3)  # frame 6, due again; the next chance, frame 9, would be too late
    assert sched.overdue


def test_at_a_rate_a_due_run_moves_once_then_goes_ahead_without_a_slot() -> None:
    slots = WatchedSlots(1)
    det = DetectorConfig(detect_every_n_frames=2, max_detect_every_n_frames=4)
    base = AppConfig(analysis=AnalysisConfig(fps=5.0))
    faces = base.faces.model_copy(update={"detector": det, "tracker": TrackerConfig(min_hits=1)})
    cfg = base.model_copy(update={"faces": faces})
    detector = CountingDetector()
    analyzer = CameraAnalyzer("cam", cfg, detector, "m", CameraStats("cam"), slots=slots)
    held = slots.acquire(wait=False)  # other cameras keep the one slot busy throughout
    assert held is not None
    for k in (0, 3, 6, 9, 12):  # 15 fps analysed at 5
        analyzer.prepare(_frame(k))
    assert not slots.waiting.is_set()  # never waited behind the other cameras
    # Each due run moved to the next analysed frame once, then ran without the slot.
    assert detector.frames == [3, 9]
    assert analyzer.stats.detections_deferred == 3
