"""YuNet detection on real stills and aligned crops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamer.faces.config import DetectorConfig
from streamer.faces.crops import crop_faces, eye_angle
from streamer.faces.tracker import iou_matrix
from streamer.faces.yunet import YuNetDetector


def imread(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"cannot read {path}"
    return img


@pytest.fixture(scope="module")
def yunet(store_path: Callable[[str], Path]) -> Path:
    return store_path("yunet")


def test_multi_face_still_finds_every_face(yunet: Path, store_path: Callable[[str], Path]) -> None:
    img = imread(store_path("multi_face.jpg"))
    dets = YuNetDetector(yunet, DetectorConfig(detect_width_px=1000)).detect(img)
    assert len(dets) >= 4
    assert all(0.0 <= d.box[0] < d.box[2] <= img.shape[1] for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_downscaled_detection_maps_boxes_back(
    yunet: Path, store_path: Callable[[str], Path]
) -> None:
    img = imread(store_path("single_face.jpg"))
    full = YuNetDetector(yunet, DetectorConfig(detect_width_px=4096)).detect(img)
    small = YuNetDetector(yunet, DetectorConfig(detect_width_px=160)).detect(img)
    assert len(full) == len(small) == 1
    iou = iou_matrix(np.array([full[0].box]), np.array([small[0].box]))[0, 0]
    assert iou > 0.7


def test_no_face_in_blank_frame(yunet: Path) -> None:
    img = np.full((360, 640, 3), 127, np.uint8)
    assert YuNetDetector(yunet, DetectorConfig()).detect(img) == []


def test_bad_frame_shape_is_rejected(yunet: Path) -> None:
    with pytest.raises(ValueError, match=r"expected a BGR image \(H, W, 3\), got shape"):
        YuNetDetector(yunet, DetectorConfig()).detect(np.zeros((10, 10), np.uint8))


def test_crops_are_square_and_roll_corrected() -> None:
    # A synthetic "face": two dark eyes on a tilted line in a bright square.
    img = np.full((200, 200), 200, np.uint8)
    right_eye, left_eye = (80.0, 90.0), (120.0, 110.0)  # tilted ~26.6 degrees
    for x, y in (right_eye, left_eye):
        cv2.circle(img, (int(x), int(y)), 6, 0, -1)
    lm = np.array([right_eye, left_eye, (100, 120), (90, 140), (110, 140)], np.float32)
    angle = eye_angle(lm)
    assert angle == pytest.approx(26.565, abs=0.01)
    crops = crop_faces(img, [(60.0, 60.0, 140.0, 140.0)], [angle], margin=0.2)
    assert crops.shape == (1, 64, 64) and crops.dtype == np.uint8
    ys, xs = np.nonzero(crops[0] < 60)
    left = ys[xs < 32].mean()
    right = ys[xs >= 32].mean()
    assert abs(left - right) < 2.0, "eyes must be level after alignment"
    assert crop_faces(img, [], []).shape == (0, 64, 64)
