"""``streamer predict IMAGE_OR_DIR ...``: valence/arousal of faces in still images.

One JSON object per face on stdout::

    {"file": "a.jpg", "face": 0, "box": [x1, y1, x2, y2], "score": 0.93,
     "valence": 0.41, "arousal": 0.22, "model": "fer-minixception-va~approx"}

Faces are found with YuNet and cut like the video pipeline cuts them; ``--crops``
treats every image as an already cropped face (box = the whole image). Unreadable images
are reported by name on stderr and skipped; the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydantic import ValidationError

from streamer.errors import ConfigError, MediaError

if TYPE_CHECKING:
    from streamer.affect.config import AffectConfig
    from streamer.faces.config import FacesConfig
    from streamer.pipeline import FaceDetector

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


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


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 image; raises :class:`MediaError` naming the file when unreadable."""
    if not path.is_file():
        why = "not a regular file" if path.exists() else "no such file"
        raise MediaError(f"{path}: {why}")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise MediaError(f"{path}: not a readable image")
    return img


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
            img = read_image(path)
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
