"""Fixtures of the affect tests: real face crops cut from real video through the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamer.faces.config import DetectorConfig
from streamer.faces.crops import crop_faces, eye_angle
from streamer.faces.yunet import YuNetDetector


@pytest.fixture(scope="session")
def fer_path(store_path: Callable[[str], Path]) -> Path:
    return store_path("fer")


@pytest.fixture(scope="session")
def single_face_crops(store_path: Callable[[str], Path]) -> np.ndarray:
    """(F, 64, 64) uint8: the largest face of every frame of single_face.mp4 (a man going
    from neutral to smiling), cut as the pipeline cuts them (YuNet + aligned crop)."""
    video = store_path("single_face.mp4")
    detector = YuNetDetector(store_path("yunet"), DetectorConfig())
    crops = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            bgr = frame.to_ndarray(format="bgr24")
            dets = detector.detect(bgr)
            if not dets:
                continue
            d = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            crops.append(crop_faces(gray, [d.box], [eye_angle(d.landmarks)])[0])
    assert len(crops) > 30, "expected a face in most frames of single_face.mp4"
    return np.stack(crops)
