"""``streamer predict IMAGE_OR_DIR ...``: valence/arousal of faces in still images.

One JSON object per face on stdout::

    {"file": "a.jpg", "face": 0, "box": [x1, y1, x2, y2], "score": 0.93,
     "valence": 0.41, "arousal": 0.22, "model": "fer-minixception-va~approx"}

Faces are found with YuNet and cut like the video pipeline cuts them; ``--crops``
treats every image as an already cropped face (box = the whole image). Unreadable images
are reported by name on stderr and skipped; the exit code is 1 when any failed.

Images are untrusted. The size is read from the header first: an image over the pixel
cap (``--max-pixels``, the cap video frames have too: 8192 x 8192 by default) is refused
before anything is decoded, so a decompression bomb costs nothing. A truncated or
corrupt image is an error naming it (not a partly grey picture). A multi-page or
animated file (TIFF, GIF, WebP, APNG) is analysed on its first page, and the log says
so. The EXIF orientation is applied, as a viewer shows the photo. One bad image never
stops the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from pydantic import ValidationError

from streamer.errors import ConfigError, MediaError
from streamer.sources.config import MAX_PIXELS

if TYPE_CHECKING:
    from streamer.affect.config import AffectConfig
    from streamer.faces.config import FacesConfig
    from streamer.pipeline import FaceDetector

logger = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".pgm",
    ".ppm",
    ".gif",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "predict",
        help="valence/arousal of the faces in still images (one JSON per face)",
        description="Valence/arousal of the faces in still images: one JSON object per "
        "face (file, face, box, score, valence, arousal, model) on stdout. Unreadable "
        "images are reported on stderr and skipped; the exit code is 1 if any failed.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="IMAGE_OR_DIR",
        help="image files or folders of images",
    )
    p.add_argument(
        "--model",
        choices=["auto", "facechannel", "fer-va"],
        default=None,
        help="VA model (default: the config's, auto)",
    )
    p.add_argument("--weights", type=Path, help="Keras HDF5 weights file for --model")
    p.add_argument(
        "--runtime",
        metavar="TYPE",
        default=None,
        help="inference backend: onnx, torch, tensorrt or any registered runtime "
        "(default: the config's, onnx)",
    )
    p.add_argument(
        "--crops", action="store_true", help="images are already cropped faces: skip detection"
    )
    p.add_argument("--config", type=Path, help="YAML config (faces and affect sections)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse images larger than N pixels, from their header (default {MAX_PIXELS:,}: "
        "8192x8192, the cap of video frames too)",
    )
    p.set_defaults(func=cmd_predict)


def iter_images(inputs: list[Path]) -> Iterator[Path]:
    """Files as given, folders expanded to their image files (sorted, recursive)."""
    for item in inputs:
        if item.is_dir():
            yield from sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield item


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """BGR uint8 image (H, W, 3), upright as its EXIF orientation says.

    The header is read first: an image over ``max_pixels`` is refused before it is
    decoded. Of a multi-page or animated file the first page is used (logged).

    Raises:
        MediaError: naming the file: missing, over the cap, not an image, truncated or
            corrupt.
    """
    from PIL import Image, ImageOps  # only predict decodes still images

    if not path.is_file():
        why = "not a regular file" if path.exists() else "no such file"
        raise MediaError(f"{path}: {why}")
    # Our cap is checked right after the header is read, with our message; Pillow's
    # own (a warning, an error at twice its default) would say something else.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise MediaError(
                    f"{path}: {w}x{h} ({w * h:,} pixels), over the pixel cap of {max_pixels:,} "
                    "(--max-pixels); not decoded"
                )
            pages = getattr(im, "n_frames", 1)
            if pages > 1:
                logger.info(
                    "%s: %s with %d pages or frames; the first is used", path, im.format, pages
                )
                im.seek(0)
            im.load()  # decodes; a truncated file raises here
            if im.getexif().get(EXIF_ORIENTATION, 1) != 1:  # turned as a viewer shows it
                return _bgr(ImageOps.exif_transpose(im))
            return _bgr(im)
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        # Pillow's errors for unknown, truncated and corrupt files (OSError "image file
        # is truncated", SyntaxError "not a PNG file", struct.error on short headers).
        raise MediaError(f"{path}: not a readable image ({str(err)[:160]})") from err


ROWS_PER_COPY = 256  # rows converted at a time: no second full-size copy of the image


def _bgr(im: Any) -> np.ndarray:
    """A Pillow image as BGR uint8 (H, W, 3); 16-bit and float grey are scaled as OpenCV
    scales them. Converted in bands of rows into one array, so the peak is the decoded
    image plus its BGR copy (about what OpenCV's own decoding needs)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        wide = np.asarray(im, dtype=np.float64)
        grey = (wide if im.mode == "F" else wide / 256).clip(0, 255).astype(np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    rgb = im if im.mode == "RGB" else im.convert("RGB")
    w, h = rgb.size
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, ROWS_PER_COPY):
        band = rgb.crop((0, y, w, min(h, y + ROWS_PER_COPY)))
        out[y : y + band.size[1]] = np.frombuffer(band.tobytes("raw", "BGR"), np.uint8).reshape(
            band.size[1], w, 3
        )
    return out


def _va(x: float) -> float | None:
    """Clamped to [-1, 1]; None where the model gave no finite value."""
    x = float(x)
    return round(max(-1.0, min(1.0, x)), 6) if math.isfinite(x) else None


def cmd_predict(args: argparse.Namespace) -> int:
    from streamer.affect import load_va_model
    from streamer.compose import yunet_factory
    from streamer.config import AppConfig, load_config
    from streamer.store import default_store

    cfg = load_config(args.config) if args.config else AppConfig()
    store = default_store()
    model = load_va_model(affect_config(cfg.affect, args), store)
    detector = None if args.crops else yunet_factory(cfg, store)()
    failed = 0
    for path in iter_images(list(args.inputs)):
        try:
            img = read_image(path, args.max_pixels)
        except MediaError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            continue
        faces = find_faces(img, detector, cfg.faces, model.input_size)
        if faces is None:
            logger.info("%s: no face found", path)
            continue
        boxes, scores, crops = faces
        va = model.predict(crops)
        for i, (box, score, (v, a)) in enumerate(zip(boxes, scores, va, strict=True)):
            rec = {
                "file": str(path),
                "face": i,
                "box": [round(float(c), 1) for c in box],
                "score": None if score is None else round(float(score), 4),
                "valence": _va(v),
                "arousal": _va(a),
                "model": model.name,
            }
            sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()
    if failed:
        print(f"error: {failed} image(s) could not be read", file=sys.stderr)
        return 1
    return 0


def affect_config(affect: AffectConfig, args: argparse.Namespace) -> AffectConfig:
    """The config's affect section with ``--model``, ``--weights``, ``--runtime`` applied.

    Raises:
        ConfigError: ``--weights`` without a named model, or an unknown runtime.
    """
    updates: dict[str, object] = {}
    if args.model:
        updates["model"] = args.model
    if args.weights:
        if (args.model or affect.model) == "auto":
            raise ConfigError("--weights needs --model facechannel or --model fer-va")
        updates["weights"] = args.weights
    if args.runtime:
        updates["runtime"] = {"type": args.runtime}
    if not updates:
        return affect
    try:
        return type(affect).model_validate({**affect.model_dump(), **updates})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"bad --model/--weights/--runtime: {problems}") from err


Box = tuple[float, float, float, float]


def find_faces(
    img: np.ndarray, detector: FaceDetector | None, cfg: FacesConfig, size: int
) -> tuple[list[Box], list[float | None], np.ndarray] | None:
    """Boxes, detector scores and (N, size, size) uint8 crops of the faces in ``img``.

    Without a detector the whole image is one face (``--crops``). None when no face
    was found.
    """
    from streamer.faces.crops import crop_faces, eye_angle

    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    if detector is None:
        crop = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)[None]
        return [(0.0, 0.0, float(w), float(h))], [None], crop
    dets = detector.detect(img)
    if not dets:
        return None
    boxes = [d.box for d in dets]
    angles = [eye_angle(d.landmarks) if cfg.crop.align else 0.0 for d in dets]
    crops = crop_faces(gray, boxes, angles, margin=cfg.crop.margin, size=size)
    return boxes, [d.score for d in dets], crops
