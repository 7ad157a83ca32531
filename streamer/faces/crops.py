"""Aligned square face crops for the VA networks (64x64 grayscale uint8)."""

from __future__ import annotations

import math

import cv2
import numpy as np

CROP_SIZE = 64  # px, the input of both FaceChannel and the fer mini-Xception


def eye_angle(landmarks: np.ndarray | None) -> float:
    """Roll angle in degrees that levels the eyes (YuNet: right eye, left eye first)."""
    if landmarks is None:
        return 0.0
    (rx, ry), (lx, ly) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(float(ly - ry), float(lx - rx)))


def crop_faces(
    gray: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    angles: list[float],
    margin: float = 0.2,
    size: int = CROP_SIZE,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Cut one square, roll-corrected crop per face with a single affine warp each.

    Args:
        gray: grayscale uint8 frame of shape (H, W).
        boxes: (x1, y1, x2, y2) per face, frame pixels.
        angles: roll in degrees per face (0 = no rotation).
        margin: border added around the box, as a fraction of its larger side.
        size: output side in pixels.
        out: optional preallocated (N, size, size) uint8 buffer.

    Returns:
        (N, size, size) uint8 array; regions outside the frame are replicated edge pixels.
    """
    if gray.ndim != 2:
        raise ValueError(f"expected a grayscale (H, W) frame, got shape {gray.shape}")
    if len(boxes) != len(angles):
        raise ValueError(f"expected one angle per box, got {len(angles)} for {len(boxes)}")
    n = len(boxes)
    if out is None or out.shape[0] < n or out.shape[1:] != (size, size):
        out = np.empty((n, size, size), dtype=np.uint8)
    for i, ((x1, y1, x2, y2), angle) in enumerate(zip(boxes, angles, strict=True)):
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        side = max(x2 - x1, y2 - y1) * (1.0 + margin)
        scale = size / max(side, 1.0)
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[0, 2] += size / 2.0 - cx
        m[1, 2] += size / 2.0 - cy
        cv2.warpAffine(
            gray,
            m,
            (size, size),
            dst=out[i],
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return out[:n]


def crop_faces_bgr(
    image: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    angles: list[float],
    margin: float = 0.2,
    size: int = CROP_SIZE,
) -> np.ndarray:
    """:func:`crop_faces` of a BGR frame: each face is warped in colour to ``size`` x
    ``size`` and only then converted to grayscale.

    The warp and the conversion are both linear, so the crops equal those of
    ``crop_faces(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), ...)`` within one grey level
    (rounding); the cost grows with the faces (``size`` squared pixels each), never with the
    frame: a 1080p crowd frame is not converted, not even the faces' windows.

    Args:
        image: BGR uint8 frame of shape (H, W, 3).
        boxes: (x1, y1, x2, y2) per face, frame pixels.
        angles: roll in degrees per face.
        margin: border added around the box, as a fraction of its larger side.
        size: output side in pixels.

    Returns:
        (N, size, size) uint8 grayscale crops.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR frame (H, W, 3), got shape {image.shape}")
    if len(boxes) != len(angles):
        raise ValueError(f"expected one angle per box, got {len(angles)} for {len(boxes)}")
    out = np.empty((len(boxes), size, size), dtype=np.uint8)
    colour = np.empty((size, size, 3), dtype=np.uint8)
    for i, ((x1, y1, x2, y2), angle) in enumerate(zip(boxes, angles, strict=True)):
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        side = max(x2 - x1, y2 - y1) * (1.0 + margin)
        m = cv2.getRotationMatrix2D((cx, cy), angle, size / max(side, 1.0))
        m[0, 2] += size / 2.0 - cx
        m[1, 2] += size / 2.0 - cy
        cv2.warpAffine(
            image,
            m,
            (size, size),
            dst=colour,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY, dst=out[i])
    return out
