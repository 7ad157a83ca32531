"""Crowd clips for tests and benches: an N x N mosaic of real face clips, one face a tile.

    path = make_mosaic(store, 3, tmp / "crowd9.mp4")     # 1920x1080, 24 fps, 9 faces

Each tile is a real clip from the model store (``single_face.mp4``, whose man is in
every frame, and ``carphone_pristine.mp4``, a smaller face in every frame), scaled to fit
its tile (letterboxed), started at its own offset and mirrored on every other tile, so
no two tiles show the same image. Built with PyAV (no ffmpeg binary needed), H.264.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["TILE_CLIPS", "make_mosaic", "tile_boxes"]

# Clips with one face in every frame (checked by the crowd tests at full resolution).
TILE_CLIPS = ("single_face.mp4", "carphone_pristine.mp4")
MOSAIC_SIZE = (1920, 1080)
MOSAIC_FPS = 24


class _Store(Protocol):
    def path(self, name: str) -> Path: ...


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def _fit(img: np.ndarray, tw: int, th: int) -> np.ndarray:
    """``img`` scaled to fit a ``tw`` x ``th`` tile, centred on black."""
    h, w = img.shape[:2]
    s = min(tw / w, th / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    tile = np.zeros((th, tw, 3), np.uint8)
    y, x = (th - nh) // 2, (tw - nw) // 2
    tile[y : y + nh, x : x + nw] = small
    return tile


def tile_boxes(grid: int, size: tuple[int, int] = MOSAIC_SIZE) -> list[tuple[int, int, int, int]]:
    """The (x1, y1, x2, y2) pixel rectangle of each tile, row by row."""
    w, h = size
    tw, th = w // grid, h // grid
    return [(c * tw, r * th, (c + 1) * tw, (r + 1) * th) for r in range(grid) for c in range(grid)]


def make_mosaic(
    store: _Store,
    grid: int,
    out: Path,
    *,
    frames: int = 96,
    size: tuple[int, int] = MOSAIC_SIZE,
    fps: int = MOSAIC_FPS,
) -> Path:
    """Write a ``grid`` x ``grid`` mosaic clip of real faces to ``out`` (H.264 MP4).

    Args:
        store: the model store holding :data:`TILE_CLIPS`.
        grid: tiles per side (3: 9 faces, 5: 25 faces).
        out: the file to write.
        frames: length of the clip in frames (tiles loop their clip).
        size: (width, height) of the mosaic.
        fps: frame rate of the mosaic.
    """
    w, h = size
    tw, th = w // grid, h // grid
    sources = [_frames(store.path(name)) for name in TILE_CLIPS]
    boxes = tile_boxes(grid, size)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        canvas = np.zeros((h, w, 3), np.uint8)
        for k in range(frames):
            for i, (x1, y1, _, _) in enumerate(boxes):
                clip = sources[i % len(sources)]
                img = clip[(k + 7 * i) % len(clip)]
                if i % 2:
                    img = img[:, ::-1]
                canvas[y1 : y1 + th, x1 : x1 + tw] = _fit(img, tw, th)
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    logger.info("wrote %s: %dx%d mosaic, %d frames at %d fps", out, grid, grid, frames, fps)
    return out
