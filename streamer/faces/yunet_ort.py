"""YuNet through onnxruntime: the same ONNX file as OpenCV, our own decoding and NMS.

OpenCV's pip wheels have no CUDA, so ``cv2.FaceDetectorYN`` always runs on the CPU.
This backend runs the store's YuNet file on onnxruntime, which can use the CUDA or
TensorRT execution providers, and decodes its outputs exactly as OpenCV's
``FaceDetectorYN`` does (``modules/objdetect/src/face_detect.cpp``):

* the image is padded (bottom, right, zeros) to a multiple of 32 and fed as float BGR
  NCHW without scaling;
* per stride s in (8, 16, 32) and grid cell (r, c):
  ``score = sqrt(clip(cls, 0, 1) * clip(obj, 0, 1))``, the box centre is
  ``((c, r) + bbox[:2]) * s``, its size ``exp(bbox[2:]) * s``, landmarks
  ``(kps + (c, r)) * s``;
* NMS as ``cv2.dnn.NMSBoxes`` on the boxes truncated to integer rectangles, candidates
  in descending score order (stable), at most ``top_k``.

The file's input is fixed at 640x640; a copy with free height and width is derived
once (cached by the file's sha256 beside the other derived models).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamer.errors import ModelError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

__all__ = ["STRIDES", "YuNetOnnx", "decode", "nms_boxes"]

STRIDES = (8, 16, 32)
PAD_TO = 32
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _dynamic_copy(model_path: Path, derived_dir: Path) -> Path:
    """The YuNet file with free input height and width (built once, cached)."""
    from streamer.store.derived import cached_onnx

    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()

    def build() -> onnx.ModelProto:
        import onnx

        model = onnx.load(str(model_path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for out in model.graph.output:
            out.type.tensor_type.shape.dim[1].dim_param = "anchors"
        del model.graph.value_info[:]  # fixed intermediate shapes of the 640x640 input
        return model

    return cached_onnx(derived_dir, "yunet", sha, build, variant="dynamic", builder_version=1)


def nms_boxes(boxes: np.ndarray, scores: np.ndarray, threshold: float, top_k: int) -> list[int]:
    """``cv2.dnn.NMSBoxes`` on integer (x, y, w, h) rectangles: kept indices, best first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_k]  # stable
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.asarray(kept)
            iw = np.minimum(x2[i], x2[k]) - np.maximum(x1[i], x1[k])
            ih = np.minimum(y2[i], y2[k]) - np.maximum(y1[i], y1[k])
            inter = np.where((iw > 0) & (ih > 0), iw * ih, 0)
            union = area[i] + area[k] - inter
            overlap = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
            if (overlap > threshold).any():
                continue
        kept.append(i)
    return kept


def decode(
    outputs: dict[str, np.ndarray],
    pad_hw: tuple[int, int],
    score_threshold: float,
    nms_threshold: float,
    top_k: int,
) -> np.ndarray:
    """YuNet outputs -> (K, 15) faces as ``FaceDetectorYN.detect`` returns them
    (x, y, w, h, 5 landmarks (x, y), score), best first."""
    ph, pw = pad_hw
    rows_out = []
    thr = np.float32(score_threshold)
    for s in STRIDES:
        rows, cols = ph // s, pw // s
        cls = np.clip(outputs[f"cls_{s}"].reshape(-1), 0, 1).astype(np.float32)
        obj = np.clip(outputs[f"obj_{s}"].reshape(-1), 0, 1).astype(np.float32)
        score = np.sqrt(cls * obj)
        idx = np.nonzero(score >= thr)[0]
        if idx.size == 0:
            continue
        c = (idx % cols).astype(np.float32)
        r = (idx // cols).astype(np.float32)
        st = np.float32(s)
        bbox = outputs[f"bbox_{s}"].reshape(rows * cols, 4)[idx]
        kps = outputs[f"kps_{s}"].reshape(rows * cols, 10)[idx]
        cx, cy = (c + bbox[:, 0]) * st, (r + bbox[:, 1]) * st
        w, h = np.exp(bbox[:, 2]) * st, np.exp(bbox[:, 3]) * st
        face = np.empty((idx.size, 15), np.float32)
        face[:, 0], face[:, 1] = cx - w / np.float32(2), cy - h / np.float32(2)
        face[:, 2], face[:, 3] = w, h
        face[:, 4:14:2] = (kps[:, 0::2] + c[:, None]) * st
        face[:, 5:14:2] = (kps[:, 1::2] + r[:, None]) * st
        face[:, 14] = score[idx]
        rows_out.append(face)
    if not rows_out:
        return np.empty((0, 15), np.float32)
    faces = np.concatenate(rows_out)
    if len(faces) == 1:
        return faces
    rects = np.trunc(faces[:, :4]).astype(np.int64)
    # NMSBoxes keeps candidates strictly above the score threshold.
    cand = np.nonzero(faces[:, 14] > thr)[0]
    keep = nms_boxes(rects[cand], faces[cand, 14], nms_threshold, top_k)
    return faces[cand[keep]]


class YuNetOnnx:
    """YuNet's raw detection on onnxruntime (``detect`` as ``cv2.FaceDetectorYN``'s).

    Args:
        model_path: the store's YuNet ONNX file.
        derived_dir: where the copy with a free input size is cached.
        score_threshold: minimum face score.
        nms_threshold: NMS IoU threshold.
        top_k: candidates kept before NMS.
        device: ``auto`` (TensorRT, then CUDA, when onnxruntime has them), ``cpu``,
            ``cuda`` or ``tensorrt``.
    """

    def __init__(
        self,
        model_path: Path,
        derived_dir: Path,
        score_threshold: float,
        nms_threshold: float,
        top_k: int,
        device: str = "auto",
    ) -> None:
        import onnxruntime as ort

        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        available = ort.get_available_providers()
        if device == "auto":
            providers = [p for p in _PROVIDERS["tensorrt"] if p in available]
        else:
            providers = _PROVIDERS[device]
            if providers[0] not in available:
                raise ModelError(
                    f"faces.detector.device is {device} but onnxruntime has no "
                    f"{providers[0]} (available: {', '.join(available)}); install onnxruntime-gpu"
                )
        path = _dynamic_copy(model_path, derived_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{model_path}: onnxruntime cannot load YuNet: {err}") from err
        self.provider = self._session.get_providers()[0]
        self._names = [o.name for o in self._session.get_outputs()]

    def detect(self, image: np.ndarray) -> np.ndarray:
        """(K, 15) faces of a BGR uint8 image, in its pixels (as ``FaceDetectorYN``)."""
        h, w = image.shape[:2]
        ph, pw = -(-h // PAD_TO) * PAD_TO, -(-w // PAD_TO) * PAD_TO
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = image.transpose(2, 0, 1)
        values = self._session.run(self._names, {"input": blob})
        outputs = dict(zip(self._names, values, strict=True))
        return decode(outputs, (ph, pw), self.score_threshold, self.nms_threshold, self.top_k)
