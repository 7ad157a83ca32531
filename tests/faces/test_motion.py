"""Empty rooms nearly free: with no track, the detector runs only when the picture
changed, and at least every ``idle_detect_every_s`` of media time."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.config import AppConfig
from streamer.faces.config import DetectorConfig, TrackerConfig
from streamer.faces.motion import THUMB_WIDTH_PX, MotionGate, thumbnail
from streamer.faces.schedule import DetectorSlots
from streamer.messages import Detection, Frame
from streamer.pipeline import CameraAnalyzer, CameraStats

FPS = 15.0
SIZE = (720, 1280)  # a 720p camera


def _room(seed: int = 0, block_px: int = 80) -> np.ndarray:
    """A still, textured 16:9 scene (an empty room): 720p, or 360p with 40 px blocks."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, (9, 16, 3), dtype=np.uint8)
    return np.asarray(np.kron(small, np.ones((block_px, block_px, 1), np.uint8)), np.uint8)


def _noisy(room: np.ndarray, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    """``room`` with sensor noise (uniform, ``sigma`` grey levels of standard deviation):
    one of 8 noise layers drawn once, shifted by a random offset (cheap at 720p)."""
    key = (sigma, room.shape)
    layers = _NOISE.get(key)
    if layers is None:
        span = round(sigma * 3**0.5)  # a uniform [-span, span] has std span / sqrt(3)
        layers = _NOISE[key] = np.random.default_rng(99).integers(
            -span, span + 1, (8, *room.shape), dtype=np.int16
        )
    noise = np.roll(layers[rng.integers(len(layers))], int(rng.integers(1000)), axis=1)
    return np.asarray(np.clip(room + noise, 0, 255), np.uint8)


_NOISE: dict[tuple[float, tuple[int, ...]], np.ndarray] = {}


def test_the_thumbnail_is_small_and_grey() -> None:
    th = thumbnail(_room())
    assert th.shape == (45, THUMB_WIDTH_PX) and th.dtype == np.uint8
    assert thumbnail(np.zeros((30, 40, 3), np.uint8)).shape == (30, 40)  # never upscaled


@pytest.mark.parametrize(
    ("what", "changed"),
    [
        ("sensor noise", False),
        ("a person-sized block walks in", True),
        ("the lights go down", True),
        ("a 16 px speck", False),
    ],
)
def test_what_counts_as_a_change(what: str, changed: bool) -> None:
    rng = np.random.default_rng(1)
    room = _room()
    gate = MotionGate(DetectorConfig())
    before = thumbnail(_noisy(room, rng))
    after = _noisy(room, rng, sigma=6.0)
    if what == "a person-sized block walks in":
        after[300:500, 600:720] = 250
    elif what == "the lights go down":
        after = (after // 2).astype(np.uint8)
    elif what == "a 16 px speck":
        after[100:116, 100:116] = 255
    assert gate.changed(thumbnail(after), before) is changed


class CountingDetector:
    """Remembers the frames it ran on; finds a face from ``face_from`` on."""

    def __init__(self, face_from: int | None = None) -> None:
        self.frames: list[int] = []
        self.face_from = face_from
        self.k = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.frames.append(self.k)
        if self.face_from is not None and self.k >= self.face_from:
            return [Detection((500.0, 200.0, 700.0, 440.0), 0.9, None)]
        return []


def _analyzer(detector: CountingDetector, idle_s: float | None = 1.0) -> CameraAnalyzer:
    base = AppConfig()
    det = DetectorConfig(
        detect_every_n_frames=2, max_detect_every_n_frames=4, idle_detect_every_s=idle_s
    )
    faces = base.faces.model_copy(update={"detector": det, "tracker": TrackerConfig(min_hits=2)})
    cfg = base.model_copy(update={"faces": faces})
    return CameraAnalyzer("cam", cfg, detector, "m", CameraStats("cam"), slots=DetectorSlots(1))


def _run(analyzer: CameraAnalyzer, detector: CountingDetector, images: list[np.ndarray]) -> None:
    for k, image in enumerate(images):
        detector.k = k
        analyzer.prepare(Frame("cam", k, k / FPS, image))


def test_an_empty_still_room_is_looked_at_once_a_second() -> None:
    rng = np.random.default_rng(2)
    room = _room(block_px=40)
    images = [_noisy(room, rng) for _ in range(46)]  # 3 s at 15 fps
    detector = CountingDetector()
    analyzer = _analyzer(detector)
    _run(analyzer, detector, images)
    # Due every 2nd frame; the first run, then one a second (the first due frame at
    # least 1.0 s of media time after the last run: frame 16 is 1.07 s after frame 0).
    assert detector.frames == [0, 16, 32]
    assert analyzer.stats.detections_idle_skipped == 23 - 3
    assert analyzer.stats.detector_runs == 3


def test_without_the_gate_an_empty_room_keeps_the_schedule() -> None:
    images = [_room(block_px=40)] * 46
    detector = CountingDetector()
    analyzer = _analyzer(detector, idle_s=None)
    _run(analyzer, detector, images)
    assert detector.frames == list(range(0, 46, 2))
    assert analyzer.stats.detections_idle_skipped == 0


def test_something_moving_in_is_looked_at_on_the_next_due_frame() -> None:
    rng = np.random.default_rng(3)
    room = _room(block_px=40)
    images = [_noisy(room, rng) for _ in range(30)]
    for k in range(7, 30):  # from frame 7 on, someone stands in the doorway
        images[k][100:280, 50:150] = 230
    detector = CountingDetector()
    analyzer = _analyzer(detector)
    _run(analyzer, detector, images)
    # Frame 8 is the first due frame after the change; then the room is still again.
    assert detector.frames == [0, 8, 24]


def test_a_face_found_turns_the_gate_off_until_its_track_is_gone() -> None:
    images = [_room(block_px=40)] * 40
    detector = CountingDetector(face_from=0)  # a still face, in every frame
    analyzer = _analyzer(detector)
    _run(analyzer, detector, images)
    # A track from the first run on: the schedule runs (2 frames, stretching to 4 while
    # the track is stable), never the gate.
    assert analyzer.stats.detections_idle_skipped == 0
    assert analyzer.stats.detector_runs >= 40 // 4
    assert analyzer.tracker.tracks[0].confirmed
