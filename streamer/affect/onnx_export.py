"""Build ONNX models from a :class:`~streamer.affect.graph.Graph` with ``onnx.helper``.

No torch needed: the default CPU install turns a Keras HDF5 file into a runnable ONNX
model. The input is ``input`` of shape (N, C, H, W) float32 with a dynamic batch
dimension ``N``. BatchNorm layers that follow a convolution are folded into it.

Built models are cached under the store's derived folder, keyed by the source file's
sha256, the network and the builder version, and written atomically::

    path = cached_onnx(store.derived_dir, "fer", sha256, lambda: build_onnx(graph))

Beside each model a small JSON record holds the full sha256 of the weights it was built
from and the sha256 of the model file itself: a lookup checks both, so an entry is never
used for other weights, and a damaged file (truncated, edited) is rebuilt with a warning.
``onnx`` itself is imported only to build, so a cache hit costs no ``import onnx``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.affect.graph import Graph, fold_batchnorm
from streamer.errors import ModelError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

__all__ = ["BUILDER_VERSION", "INPUT_NAME", "build_onnx", "cached_onnx", "record_path"]

BUILDER_VERSION = 1  # bump when the emitted graph changes: old cache entries are ignored
OPSET = 17
INPUT_NAME = "input"


def build_onnx(graph: Graph, fold_bn: bool = True) -> onnx.ModelProto:
    """Translate ``graph`` into an ONNX model (opset 17, dynamic batch).

    Args:
        graph: the network.
        fold_bn: fold BatchNorm into the preceding convolutions.

    Returns:
        A checked ONNX model whose outputs are named as ``graph.outputs``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = fold_batchnorm(graph) if fold_bn else graph
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    tensor: dict[str, str] = {}

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    for n in g.nodes:
        ins = [tensor[i] for i in n.inputs]
        out = f"{n.name}:0"  # output names stay free for the graph outputs
        if n.op == "input":
            tensor[n.name] = INPUT_NAME
            continue
        if n.op == "conv":
            args = [ins[0], const(f"{n.name}.W", n.params["W"])]
            if "b" in n.params:
                args.append(const(f"{n.name}.b", n.params["b"]))
            w = n.params["W"]
            nodes.append(
                helper.make_node(
                    "Conv",
                    args,
                    [out],
                    name=n.name,
                    kernel_shape=[int(w.shape[2]), int(w.shape[3])],
                    strides=list(n.attrs["strides"]),
                    pads=[
                        n.attrs["pads"][0],
                        n.attrs["pads"][1],
                        n.attrs["pads"][2],
                        n.attrs["pads"][3],
                    ],
                    group=int(n.attrs["group"]),
                )
            )
        elif n.op == "bn":
            p = n.params
            nodes.append(
                helper.make_node(
                    "BatchNormalization",
                    [
                        ins[0],
                        const(f"{n.name}.gamma", p["gamma"]),
                        const(f"{n.name}.beta", p["beta"]),
                        const(f"{n.name}.mean", p["mean"]),
                        const(f"{n.name}.var", p["var"]),
                    ],
                    [out],
                    name=n.name,
                    epsilon=float(n.attrs["eps"]),
                )
            )
        elif n.op in ("relu", "tanh", "sigmoid"):
            op = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[n.op]
            nodes.append(helper.make_node(op, ins, [out], name=n.name))
        elif n.op == "softmax":
            nodes.append(helper.make_node("Softmax", ins, [out], name=n.name, axis=1))
        elif n.op == "maxpool":
            t, left, b, r = n.attrs["pads"]
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    ins,
                    [out],
                    name=n.name,
                    kernel_shape=list(n.attrs["kernel"]),
                    strides=list(n.attrs["strides"]),
                    pads=[t, left, b, r],
                )
            )
        elif n.op == "add":
            acc = ins[0]
            for i, other in enumerate(ins[1:]):
                name = out if i == len(ins) - 2 else f"{n.name}/sum{i}"
                nodes.append(helper.make_node("Add", [acc, other], [name], name=name))
                acc = name
        elif n.op == "shunt":
            decay = const(f"{n.name}.decay", np.array(n.attrs["decay"], np.float32))
            nodes.append(
                helper.make_node("Add", [ins[1], decay], [f"{n.name}/den"], name=f"{n.name}/den")
            )
            nodes.append(helper.make_node("Div", [ins[0], f"{n.name}/den"], [out], name=n.name))
        elif n.op == "gap":
            nodes.append(
                helper.make_node("GlobalAveragePool", ins, [f"{n.name}/4d"], name=f"{n.name}/4d")
            )
            nodes.append(helper.make_node("Flatten", [f"{n.name}/4d"], [out], name=n.name, axis=1))
        elif n.op == "flatten":
            src = ins[0]
            if n.attrs.get("channels_last"):
                nodes.append(
                    helper.make_node(
                        "Transpose",
                        [src],
                        [f"{n.name}/nhwc"],
                        name=f"{n.name}/nhwc",
                        perm=[0, 2, 3, 1],
                    )
                )
                src = f"{n.name}/nhwc"
            nodes.append(helper.make_node("Flatten", [src], [out], name=n.name, axis=1))
        elif n.op == "dense":
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [
                        ins[0],
                        const(f"{n.name}.W", n.params["W"]),
                        const(f"{n.name}.b", n.params["b"]),
                    ],
                    [out],
                    name=n.name,
                )
            )
        else:
            raise ModelError(f"graph op {n.op!r} has no ONNX translation")
        tensor[n.name] = out

    outputs = []
    for src, name in g.outputs:
        shape = g.node(src).shape
        nodes.append(helper.make_node("Identity", [tensor[src]], [name], name=f"out/{name}"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape]))
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *g.input.shape])
    model = helper.make_model(
        helper.make_graph(nodes, g.name, [inp], outputs, inits),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="streamer.affect",
        producer_version=str(BUILDER_VERSION),
    )
    model.ir_version = min(model.ir_version, 9)  # loadable by onnxruntime >= 1.17
    onnx.checker.check_model(model)
    return model


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_path(model_path: Path) -> Path:
    """The JSON record kept beside a cached model."""
    return model_path.with_name(model_path.name + ".json")


def _valid_entry(path: Path, source_sha256: str) -> bool:
    """Whether the cached ``path`` was built from ``source_sha256`` and is intact.

    A missing entry is a plain miss; a damaged or foreign one is logged as a warning.
    """
    if not path.is_file():
        return False
    rec = record_path(path)
    problem = ""
    try:
        meta: dict[str, Any] = json.loads(rec.read_text())
        if meta.get("source_sha256") != source_sha256:
            problem = f"it was built from other weights (sha256 {meta.get('source_sha256')})"
        elif meta.get("sha256") != _sha256_bytes(path):
            problem = "its content does not match its recorded sha256 (damaged)"
    except FileNotFoundError:  # written by an older version: rebuild quietly
        logger.info("cached model %s has no record %s; rebuilding it", path, rec.name)
        return False
    except (OSError, ValueError, AttributeError) as err:
        problem = f"its record {rec.name} is unreadable ({err})"
    if problem:
        logger.warning("cached model %s is not used: %s; rebuilding it", path, problem)
        return False
    return True


def cached_onnx(
    derived_dir: Path,
    network: str,
    source_sha256: str,
    build: Callable[[], onnx.ModelProto],
    variant: str = "fp32",
) -> Path:
    """Return the cached ONNX file for a source file, building it on a miss.

    Args:
        derived_dir: the store's folder for derived files.
        network: network key (``"fer"``, ``"facechannel"``).
        source_sha256: sha256 of the weights file the model is built from.
        build: makes the model on a cache miss (or when the entry is damaged or was
            built from other weights).
        variant: ``"fp32"`` or e.g. ``"int8"``.

    Returns:
        Path of the ``.onnx`` file (written atomically: a crash leaves no partial file).
    """
    derived_dir.mkdir(parents=True, exist_ok=True)
    path = derived_dir / f"{network}-{source_sha256[:16]}-b{BUILDER_VERSION}-{variant}.onnx"
    if _valid_entry(path, source_sha256):
        return path
    data = build().SerializeToString()
    for stale in derived_dir.glob(f"{path.stem}.ort*"):  # optimised copies of the old file
        stale.unlink(missing_ok=True)
    _atomic_write(path, data)
    meta = {
        "network": network,
        "variant": variant,
        "builder_version": BUILDER_VERSION,
        "source_sha256": source_sha256,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    _atomic_write(record_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    logger.info("built %s", path)
    return path
