"""Crowds: a 1080p mosaic of real face clips, one face per tile, replayed end to end.

Every tile holds a face in every frame (its clip is checked at full resolution), so once
the tracks are confirmed each frame must report one face per tile, each in its own tile,
with one track per tile for the whole clip: the detector, run at the configured width
and on the stretched schedule, must not lose any of them.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from streamer.faces.config import DetectorConfig
from streamer.faces.crops import crop_faces, crop_faces_bgr
from streamer.faces.schedule import DetectionSchedule
from streamer.faces.yunet import YuNetDetector, downscale
from streamer.messages import VA_SCHEMA
from streamer.testing.mosaic import TILE_CLIPS, tile_boxes
from tests.helpers.crowd import CROWD_FRAMES


def test_tile_clips_have_a_face_in_every_frame(store_path: Callable[[str], Path]) -> None:
    detector = YuNetDetector(store_path("yunet"), DetectorConfig(detect_width_px=4096))
    for name in TILE_CLIPS:
        with av.open(str(store_path(name))) as container:
            counts = [
                len(detector.detect(f.to_ndarray(format="bgr24")))
                for f in container.decode(video=0)
            ]
        assert set(counts) == {1}, f"{name}: faces per frame {collections.Counter(counts)}"


def test_crowd_replay_finds_every_face(crowd9: Path, tmp_path: Path) -> None:
    out = tmp_path / "crowd.jsonl"
    args = ["-q", "replay", str(crowd9), "--no-progress", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    va = [r for r in map(json.loads, out.read_text().splitlines()) if r["schema"] == VA_SCHEMA]
    per_frame: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in va:
        per_frame[r["frame"]].append(r)
    full = [f for f in sorted(per_frame) if len(per_frame[f]) == 9]
    assert full, f"never 9 faces in a frame: {collections.Counter(map(len, per_frame.values()))}"
    first = full[0]
    assert first <= 8, f"9 faces only from frame {first} (tracks confirm within a few frames)"
    tiles = tile_boxes(3)
    track_tile: dict[int, int] = {}
    for f in range(first, CROWD_FRAMES):
        recs = per_frame.get(f, [])
        assert len(recs) == 9, f"frame {f}: {len(recs)} faces, expected one per tile"
        for r in recs:
            x1, y1, x2, y2 = r["box"]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            tile = next(i for i, (a, b, c, d) in enumerate(tiles) if a <= cx < c and b <= cy < d)
            assert track_tile.setdefault(r["track_id"], tile) == tile, "a track changed tile"
    assert sorted(track_tile.values()) == list(range(9)), "one track per tile"


def test_bgr_crops_match_crops_of_the_gray_frame(crowd9: Path) -> None:
    with av.open(str(crowd9)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    rng = np.random.default_rng(0)
    boxes, angles = [], []
    for _ in range(200):  # everywhere, frame edges and beyond included
        x1, y1, side = rng.uniform(-80, 1900), rng.uniform(-80, 1060), rng.uniform(8, 500)
        boxes.append((x1, y1, x1 + side * rng.uniform(0.7, 1.3), y1 + side))
        angles.append(float(rng.uniform(-40, 40)))
    a = crop_faces(gray, boxes, angles).astype(np.int16)
    b = crop_faces_bgr(image, boxes, angles).astype(np.int16)
    assert np.abs(a - b).max() <= 1  # fixed-point rounding of the shifted warp only


@pytest.mark.parametrize("size", [(320, 180), (480, 270), (250, 141)])
def test_detection_downscale_is_close_to_an_area_resize_and_keeps_every_face(
    crowd9: Path, store_path: Callable[[str], Path], size: tuple[int, int]
) -> None:
    with av.open(str(crowd9)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    small = downscale(image, *size)
    area = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    assert small.shape == area.shape == (size[1], size[0], 3)
    assert np.abs(small.astype(np.int16) - area).mean() < 2.0
    detector = YuNetDetector(store_path("yunet"), DetectorConfig(detect_width_px=size[0]))
    assert len(detector.detect(image)) == 9  # one face per tile, found at this width


def test_detection_interval_stretches_while_stable_and_resets_on_change() -> None:
    from streamer.faces.config import TrackerConfig
    from streamer.faces.tracker import Tracker
    from streamer.messages import Detection

    cfg = DetectorConfig(detect_every_n_frames=2, max_detect_every_n_frames=4)
    sched, tracker = DetectionSchedule(cfg), Tracker(TrackerConfig(min_hits=1))
    face = Detection((100.0, 100.0, 200.0, 220.0), 0.9, None)
    runs = []
    for k in range(40):
        faces = [face]
        if k >= 30:  # a second face enters
            faces.append(Detection((400.0, 100.0, 500.0, 220.0), 0.9, None))
        if sched.due():
            runs.append(k)
            step = tracker.step(k / 30, faces)
            sched.observe(tracker, step)
        else:
            tracker.step(k / 30, None)
    gaps = np.diff(runs)
    assert gaps.max() == 4 and gaps.min() >= 2
    after = [r for r in runs if r >= 30]
    assert after and after[0] - 30 < 4, "the new face is detected within the longest interval"
    assert runs[-1] - runs[-2] <= 4
