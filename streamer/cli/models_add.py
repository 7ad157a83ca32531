"""``streamer models add NAME PATH``: cache a weights file the user already has.

    streamer models add facechannel ~/Downloads/trainedNetworks.tar.xz
    streamer models add facechannel DimensionalFaceChannel.h5

The file (or the archive member) is imported with the same h5py reader the runtime
uses: every layer and tensor shape is checked and every weight must be used. Its ONNX
model is built right away (no torch needed), then the file is cached like a fetched
model, so ``affect.model: auto`` selects it from then on.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from streamer.store import default_store

logger = logging.getLogger(__name__)

# store artifact -> network key of streamer.affect.models
ADDABLE = {"facechannel": "facechannel", "fer": "fer-va"}


def register_add(models_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``add`` action to ``streamer models``."""
    p = models_subparsers.add_parser(
        "add",
        help="check a weights file you already have and cache it like a fetched model",
        description="Accepts the Keras HDF5 file (DimensionalFaceChannel.h5) or an archive "
        "holding it (the official trainedNetworks.tar.xz).",
    )
    p.add_argument("name", choices=sorted(ADDABLE), help="artifact name")
    p.add_argument("path", type=Path, help="weights file or archive")
    p.set_defaults(func=cmd_add)


def validate_weights(name: str, path: Path, derived_dir: Path) -> str:
    """Import ``path`` as network ``name``, build and smoke-run its ONNX model.

    Returns:
        A one-line summary.

    Raises:
        WeightsError: the file does not match the network (names file and layer).
        ModelError: the built model does not run or returns non-finite values.
    """
    from streamer.affect.config import OnnxRuntimeConfig
    from streamer.affect.models import build_source
    from streamer.affect.runtimes.onnxrt import OnnxRuntime, onnx_path
    from streamer.errors import ModelError

    source, kf = build_source(ADDABLE[name], path, derived_dir)
    onnx_file = onnx_path(source)
    rt = OnnxRuntime(onnx_file, OnnxRuntimeConfig())
    x = np.full((2, *source.graph.input.shape), 0.5, np.float32)
    outs = rt.run(x)
    if not all(np.isfinite(o).all() for o in outs):
        raise ModelError(f"{path}: the imported network returns non-finite values")
    return (
        f"{name}: {kf.weights.used_param_count:,} parameters imported (Keras "
        f"{kf.keras_version or '?'}), every weight used; ONNX model {onnx_file.name}"
    )


def cmd_add(args: argparse.Namespace) -> int:
    store = default_store()
    summary: list[str] = []

    def validate(tmp: Path) -> str:
        line = validate_weights(args.name, tmp, store.derived_dir)
        summary.append(line)
        return line

    cached = store.add(args.name, args.path, validate=validate)
    print(summary[-1] if summary else args.name)
    print(f"{args.name}: cached {cached}")
    return 0
