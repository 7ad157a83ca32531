"""YuNet on onnxruntime against cv2.FaceDetectorYN on real clips and stills: the same
faces (count per frame), boxes with IoU >= 0.95, scores within 1e-3."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamer.faces.config import DetectorConfig
from streamer.faces.yunet import YuNetDetector
from streamer.faces.yunet_ort import YuNetOnnx, nms_boxes

CLIPS = ("single_face.mp4", "carphone_pristine.mp4", "face_noface.mov", "noface_face.mov")
STILLS = ("single_face.jpg", "multi_face.jpg")
EVERY = 4  # frames sampled per clip: every 4th
DETECT_WIDTHS = (320, 0)  # the pipeline's default, and full resolution


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def _images(path: Path) -> Iterator[np.ndarray]:
    if path.suffix == ".jpg":
        img = cv2.imread(str(path))
        assert img is not None
        yield img
        return
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k % EVERY == 0:
                yield frame.to_ndarray(format="bgr24")


def _sizes(img: np.ndarray) -> Iterator[np.ndarray]:
    h, w = img.shape[:2]
    for width in DETECT_WIDTHS:
        if width and width < w:
            yield cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        else:
            yield img


@pytest.mark.parametrize("name", CLIPS + STILLS)
def test_onnxruntime_yunet_matches_opencv(
    name: str, store_path: Callable[[str], Path], store_derived: Path
) -> None:
    model = store_path("yunet")
    ort_net = YuNetOnnx(model, store_derived, 0.7, 0.3, 5000, device="cpu")
    images = faces_seen = 0
    for img in _images(store_path(name)):
        for small in _sizes(img):
            h, w = small.shape[:2]
            cv_net = cv2.FaceDetectorYN.create(str(model), "", (w, h), 0.7, 0.3, 5000)
            _, ref = cv_net.detect(small)
            ref = np.zeros((0, 15), np.float32) if ref is None else ref
            got = ort_net.detect(small)
            images += 1
            assert len(got) == len(ref), f"{name} {w}x{h}: {len(got)} faces vs {len(ref)}"
            for a, b in zip(ref, got, strict=True):  # both best first
                assert _iou(a[:4], b[:4]) >= 0.95
                assert abs(float(a[14]) - float(b[14])) <= 1e-3
                np.testing.assert_allclose(a[4:14], b[4:14], atol=1.0)
            faces_seen += len(ref)
    assert images > 0
    if name != "no_face.mp4":
        assert faces_seen > 0, f"{name}: no face found by either backend"


def test_detector_backend_option_gives_the_same_detections(
    store_path: Callable[[str], Path], store_derived: Path
) -> None:
    img = cv2.imread(str(store_path("multi_face.jpg")))
    assert img is not None
    cv_dets = YuNetDetector(store_path("yunet"), DetectorConfig()).detect(img)
    ort_det = YuNetDetector(
        store_path("yunet"), DetectorConfig(backend="onnxruntime", device="cpu"), store_derived
    )
    assert ort_det.backend == "onnxruntime-CPU"
    ort_dets = ort_det.detect(img)
    assert len(cv_dets) == len(ort_dets) > 1
    for a, b in zip(cv_dets, ort_dets, strict=True):
        np.testing.assert_allclose(a.box, b.box, atol=0.5)
        assert abs(a.score - b.score) <= 1e-3


def test_nms_matches_opencv_nmsboxes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        xy = rng.integers(0, 200, (n, 2))
        wh = rng.integers(1, 80, (n, 2))
        boxes = np.concatenate([xy, wh], axis=1)
        scores = rng.choice(np.linspace(0.71, 0.99, 15), n).astype(np.float32)  # ties too
        ref = cv2.dnn.NMSBoxes([tuple(map(int, b)) for b in boxes], scores.tolist(), 0.7, 0.3)
        assert nms_boxes(boxes, scores, 0.3, 5000) == [int(i) for i in np.ravel(ref)]


def test_device_without_its_provider_is_one_clear_error(
    store_path: Callable[[str], Path], store_derived: Path
) -> None:
    import onnxruntime as ort

    from streamer.errors import ModelError

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime here has CUDA: the error case cannot happen")
    with pytest.raises(ModelError, match="install onnxruntime-gpu"):
        YuNetOnnx(store_path("yunet"), store_derived, 0.7, 0.3, 5000, device="cuda")


@pytest.fixture
def store_derived(tmp_path: Path) -> Path:
    return tmp_path / "derived"
