"""Build ONNX models from a :class:`~streamer.affect.graph.Graph` with ``onnx.helper``.

No torch needed: the default CPU install turns a Keras HDF5 file into a runnable ONNX
model. The input is ``input`` of shape (N, C, H, W) float32 with a dynamic batch
dimension ``N``. BatchNorm layers that follow a convolution are folded into it.

Built models are cached by the store (:func:`streamer.store.derived.cached_onnx`), keyed
by the source file's sha256, the network and :data:`BUILDER_VERSION`::

    path = cached_onnx(store.derived_dir, "fer", sha256, lambda: build_onnx(graph),
                       builder_version=BUILDER_VERSION)

``onnx`` itself is imported only to build, so a cache hit costs no ``import onnx``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.affect.graph import Graph, Kernel, Node, fold_batchnorm, interpret

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

__all__ = [
    "BUILDER_VERSION",
    "INPUT_NAME",
    "ONNX_KERNELS",
    "build_onnx",
]

BUILDER_VERSION = 1  # bump when the emitted graph changes: old cache entries are ignored
OPSET = 17
INPUT_NAME = "input"


class _OnnxBuilder:
    """Collects the nodes and initializers of the model being built."""

    def __init__(self) -> None:
        self.inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def const(self, name: str, arr: np.ndarray) -> str:
        """Add ``arr`` as a float32 initializer named ``name``."""
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def emit(
        self, op_type: str, inputs: list[str], output: str, node: str | None = None, **attrs: Any
    ) -> str:
        """Add one ONNX node (named ``node``, default ``output``); return its output."""
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output], name=node or output, **attrs))
        return output

    def params(self, n: Node, *keys: str) -> list[str]:
        """Initializers for ``n``'s weights ``keys`` (absent ones are skipped)."""
        return [self.const(f"{n.name}.{k}", n.params[k]) for k in keys if k in n.params]


def _out(n: Node) -> str:
    return f"{n.name}:0"  # output names stay free for the graph outputs


def _conv(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    w = n.params["W"]
    return m.emit(
        "Conv",
        [ins[0], *m.params(n, "W", "b")],
        _out(n),
        n.name,
        kernel_shape=[int(w.shape[2]), int(w.shape[3])],
        strides=list(n.attrs["strides"]),
        pads=list(n.attrs["pads"]),
        group=int(n.attrs["group"]),
    )


def _bn(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    args = [ins[0], *m.params(n, "gamma", "beta", "mean", "var")]
    return m.emit("BatchNormalization", args, _out(n), n.name, epsilon=float(n.attrs["eps"]))


def _unary(op_type: str, **attrs: Any) -> Kernel[_OnnxBuilder, str]:
    def kernel(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
        return m.emit(op_type, ins, _out(n), n.name, **attrs)

    return kernel


def _maxpool(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    return m.emit(
        "MaxPool",
        ins,
        _out(n),
        n.name,
        kernel_shape=list(n.attrs["kernel"]),
        strides=list(n.attrs["strides"]),
        pads=list(n.attrs["pads"]),
    )


def _add(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    acc = ins[0]
    for i, other in enumerate(ins[1:]):
        acc = m.emit("Add", [acc, other], _out(n) if i == len(ins) - 2 else f"{n.name}/sum{i}")
    return acc


def _shunt(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    decay = m.const(f"{n.name}.decay", np.array(n.attrs["decay"], np.float32))
    den = m.emit("Add", [ins[1], decay], f"{n.name}/den")
    return m.emit("Div", [ins[0], den], _out(n), n.name)


def _gap(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    pooled = m.emit("GlobalAveragePool", ins, f"{n.name}/4d")
    return m.emit("Flatten", [pooled], _out(n), n.name, axis=1)


def _flatten(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    src = ins[0]
    if n.attrs.get("channels_last"):
        src = m.emit("Transpose", [src], f"{n.name}/nhwc", perm=[0, 2, 3, 1])
    return m.emit("Flatten", [src], _out(n), n.name, axis=1)


def _dense(m: _OnnxBuilder, n: Node, ins: list[str]) -> str:
    return m.emit("Gemm", [ins[0], *m.params(n, "W", "b")], _out(n), n.name)


ONNX_KERNELS: dict[str, Kernel[_OnnxBuilder, str]] = {
    "conv": _conv,
    "bn": _bn,
    "relu": _unary("Relu"),
    "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"),
    "softmax": _unary("Softmax", axis=1),
    "maxpool": _maxpool,
    "add": _add,
    "shunt": _shunt,
    "gap": _gap,
    "flatten": _flatten,
    "dense": _dense,
}
"""The ONNX column of :data:`~streamer.affect.graph.OPS`: each kernel emits the op's
nodes and returns the name of its output tensor."""


def build_onnx(graph: Graph, fold_bn: bool = True) -> onnx.ModelProto:
    """Translate ``graph`` into an ONNX model (opset 17, dynamic batch).

    Args:
        graph: the network.
        fold_bn: fold BatchNorm into the preceding convolutions.

    Returns:
        A checked ONNX model whose outputs are named as ``graph.outputs``.

    Raises:
        ModelError: the graph holds an op with no ONNX translation.
    """
    import onnx
    from onnx import TensorProto, helper

    g = fold_batchnorm(graph) if fold_bn else graph
    m = _OnnxBuilder()
    tensor = interpret(g, m, INPUT_NAME, ONNX_KERNELS, "ONNX")
    outputs = []
    for src, name in g.outputs:
        m.emit("Identity", [tensor[src]], name, f"out/{name}")
        shape = g.node(src).shape
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape]))
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *g.input.shape])
    model = helper.make_model(
        helper.make_graph(m.nodes, g.name, [inp], outputs, m.inits),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="streamer.affect",
        producer_version=str(BUILDER_VERSION),
    )
    model.ir_version = min(model.ir_version, 9)  # loadable by onnxruntime >= 1.17
    onnx.checker.check_model(model)
    return model
