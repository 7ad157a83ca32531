"""A tiny inference graph (NCHW, float32) that both VA networks are expressed in.

The Keras importer turns a parsed HDF5 file into a :class:`Graph`; the ONNX builder
(:mod:`streamer.affect.onnx_export`), the torch runtime and the numpy reference
(:func:`run_numpy`) all consume the same graph, so the three can be checked against each
other. Shapes are static except the batch dimension, which lets ``same`` padding be
resolved to explicit pads once (TensorFlow puts the odd pixel at the bottom/right).

Ops and their parameters (:data:`OPS` holds the same table for code):

=========  ==========================================  ===================================
op         params                                      attrs
=========  ==========================================  ===================================
input      -                                           shape (C, H, W)
conv       W (O, I/group, kh, kw), b (O,) or absent    strides, pads (t, l, b, r), group
bn         gamma, beta, mean, var (C,)                 eps
relu/tanh  -                                           -
sigmoid    -                                           -
softmax    -                                           (over axis 1 of an (N, K) tensor)
maxpool    -                                           kernel, strides, pads
add        -                                           (n inputs)
shunt      -                                           decay: out = a / (decay + b)
gap        -                                           global average pool -> (N, C)
flatten    -                                           channels_last: flatten in HWC order
dense      W (in, out), b (out,)                       -
=========  ==========================================  ===================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from streamer.errors import ModelError

__all__ = [
    "NUMPY_KERNELS",
    "OPS",
    "Graph",
    "Kernel",
    "Node",
    "OpSpec",
    "conv_out",
    "fold_batchnorm",
    "interpret",
    "missing_kernels",
    "run_numpy",
    "same_pads",
]


@dataclass(frozen=True)
class Node:
    """One operation; its output tensor is named after the node.

    Attributes:
        op: the operation (see the module docstring).
        name: unique name (Keras layer name where there is one).
        inputs: names of the nodes feeding it.
        shape: static output shape without the batch dimension.
        attrs: op attributes.
        params: weight arrays (float32).
    """

    op: str
    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Graph:
    """A topologically ordered list of nodes with one input and named outputs.

    Attributes:
        name: network name (used in ONNX metadata).
        nodes: the nodes, inputs before consumers; ``nodes[0]`` is the input.
        outputs: ``(node name, output name)`` pairs.
    """

    name: str
    nodes: list[Node]
    outputs: list[tuple[str, str]]

    @property
    def input(self) -> Node:
        return self.nodes[0]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    @property
    def param_count(self) -> int:
        return int(sum(a.size for n in self.nodes for a in n.params.values()))


def conv_out(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a Keras ``same`` / ``valid`` convolution or pooling."""
    if padding == "same":
        return math.ceil(size / stride)
    if padding == "valid":
        return (size - kernel) // stride + 1
    raise ValueError(f"unknown padding {padding!r}")


def same_pads(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding TensorFlow applies for ``padding`` on one axis."""
    if padding == "valid":
        return 0, 0
    out = conv_out(size, kernel, stride, padding)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def fold_batchnorm(graph: Graph) -> Graph:
    """Return a copy of ``graph`` with every BatchNorm that directly follows a conv (its
    only consumer) folded into that conv's weights and bias."""
    nodes = list(graph.nodes)
    renamed: dict[str, str] = {}
    out: list[Node] = []
    by_name = {n.name: n for n in nodes}
    folded_into: dict[str, Node] = {}
    for n in nodes:
        if n.op == "bn" and len(n.inputs) == 1:
            src = by_name[n.inputs[0]]
            if src.op == "conv" and len(graph.consumers(src.name)) == 1:
                p = n.params
                scale = p["gamma"] / np.sqrt(p["var"] + n.attrs["eps"])
                w = src.params["W"] * scale[:, None, None, None]
                b0 = src.params.get("b")
                b = ((b0 if b0 is not None else 0.0) - p["mean"]) * scale + p["beta"]
                conv = folded_into.get(src.name, src)
                new = replace(
                    conv,
                    params={"W": w.astype(np.float32), "b": b.astype(np.float32)},
                )
                folded_into[src.name] = new
                out = [new if o.name == src.name else o for o in out]
                renamed[n.name] = src.name
                continue
        ins = tuple(renamed.get(i, i) for i in n.inputs)
        out.append(replace(n, inputs=ins) if ins != n.inputs else n)
    outputs = [(renamed.get(a, a), b) for a, b in graph.outputs]
    return Graph(graph.name, out, outputs)


# -- the op table and the one interpreter ---------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    """What a graph op takes: the rows of the module docstring's table.

    Attributes:
        params: names of its weight arrays (``b`` of ``conv`` is optional).
        attrs: names of its attributes.
        inputs: how many inputs it reads (``None``: one or more).
    """

    params: tuple[str, ...] = ()
    attrs: tuple[str, ...] = ()
    inputs: int | None = 1


OPS: dict[str, OpSpec] = {
    "input": OpSpec(attrs=("shape",), inputs=0),
    "conv": OpSpec(params=("W", "b"), attrs=("strides", "pads", "group")),
    "bn": OpSpec(params=("gamma", "beta", "mean", "var"), attrs=("eps",)),
    "relu": OpSpec(),
    "tanh": OpSpec(),
    "sigmoid": OpSpec(),
    "softmax": OpSpec(),
    "maxpool": OpSpec(attrs=("kernel", "strides", "pads")),
    "add": OpSpec(inputs=None),
    "shunt": OpSpec(attrs=("decay",), inputs=2),
    "gap": OpSpec(),
    "flatten": OpSpec(attrs=("channels_last",)),
    "dense": OpSpec(params=("W", "b")),
}
"""Every op a :class:`Graph` may hold. Each backend (numpy here, torch in
:mod:`streamer.affect.torch_models`, ONNX in :mod:`streamer.affect.onnx_export`) gives one
kernel per op except ``input``, and :func:`interpret` walks the graph for all three."""

CtxT = TypeVar("CtxT")
ValT = TypeVar("ValT")

Kernel = Callable[[CtxT, Node, list[ValT]], ValT]
"""One op in one backend: ``kernel(context, node, input values) -> output value``."""


def interpret(
    graph: Graph,
    ctx: CtxT,
    x: ValT,
    kernels: Mapping[str, Kernel[CtxT, ValT]],
    backend: str,
) -> dict[str, ValT]:
    """Evaluate ``graph`` node by node with one backend's kernels.

    Args:
        graph: the network.
        ctx: what the kernels need besides their inputs (parameters, a model builder).
        x: the value of the ``input`` node.
        kernels: ``{op: kernel}`` for every op of :data:`OPS` but ``input``.
        backend: names the backend in the error for an op it cannot run.

    Returns:
        ``{node name: value}`` for every node.

    Raises:
        ModelError: a node's op has no kernel in this backend.
    """
    vals: dict[str, ValT] = {}
    for n in graph.nodes:
        if n.op == "input":
            vals[n.name] = x
            continue
        kernel = kernels.get(n.op)
        if kernel is None:
            raise ModelError(f"graph op {n.op!r} has no {backend} translation")
        vals[n.name] = kernel(ctx, n, [vals[i] for i in n.inputs])
    return vals


def missing_kernels(kernels: Mapping[str, object]) -> set[str]:
    """Ops of :data:`OPS` (but ``input``) that ``kernels`` has no entry for."""
    return set(OPS) - {"input"} - set(kernels)


# -- numpy reference -------------------------------------------------------------------


def _np_conv(_: None, n: Node, ins: list[np.ndarray]) -> np.ndarray:
    x = ins[0]
    w = n.params["W"].astype(np.float64)
    t, left, b, r = n.attrs["pads"]
    sh, sw = n.attrs["strides"]
    group = n.attrs["group"]
    kh, kw = w.shape[2], w.shape[3]
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # N C Ho Wo kh kw
    if group == 1:
        y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # N Ho Wo O
        y = y.transpose(0, 3, 1, 2)
    elif group == x.shape[1] and w.shape[1] == 1:
        mult = w.shape[0] // group
        wg = w[:, 0].reshape(group, mult, kh, kw)
        y = np.einsum("nchwij,cmij->ncmhw", win, wg).reshape(
            x.shape[0], group * mult, win.shape[2], win.shape[3]
        )
    else:
        raise ModelError(f"grouped convolution with group={group} is not supported")
    if "b" in n.params:
        y = y + n.params["b"].astype(np.float64)[None, :, None, None]
    return y


def _np_bn(_: None, n: Node, ins: list[np.ndarray]) -> np.ndarray:
    p = {k: v.astype(np.float64)[None, :, None, None] for k, v in n.params.items()}
    if ins[0].ndim == 2:
        p = {k: v[:, :, 0, 0] for k, v in p.items()}
    y: np.ndarray = (ins[0] - p["mean"]) / np.sqrt(p["var"] + n.attrs["eps"]) * p["gamma"]
    return y + p["beta"]


def _np_softmax(_: None, n: Node, ins: list[np.ndarray]) -> np.ndarray:
    e: np.ndarray = np.exp(ins[0] - ins[0].max(axis=1, keepdims=True))
    y: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return y


def _np_maxpool(_: None, n: Node, ins: list[np.ndarray]) -> np.ndarray:
    t, left, b, r = n.attrs["pads"]
    sh, sw = n.attrs["strides"]
    kh, kw = n.attrs["kernel"]
    xp = np.pad(ins[0], ((0, 0), (0, 0), (t, b), (left, r)), constant_values=-np.inf)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    y: np.ndarray = win.max(axis=(4, 5))
    return y


def _np_add(_: None, n: Node, ins: list[np.ndarray]) -> np.ndarray:
    y = ins[0]
    for other in ins[1:]:
        y = y + other
    return y


def _np_flatten(_: None, n: Node, ins: list[np.ndarray]) -> np.ndarray:
    z = ins[0].transpose(0, 2, 3, 1) if n.attrs.get("channels_last") else ins[0]
    return z.reshape(z.shape[0], -1)


def _np_dense(_: None, n: Node, ins: list[np.ndarray]) -> np.ndarray:
    y: np.ndarray = ins[0] @ n.params["W"].astype(np.float64)
    return y + n.params["b"].astype(np.float64)


NUMPY_KERNELS: dict[str, Kernel[None, np.ndarray]] = {
    "conv": _np_conv,
    "bn": _np_bn,
    "relu": lambda _, n, ins: np.maximum(ins[0], 0.0),
    "tanh": lambda _, n, ins: np.tanh(ins[0]),
    "sigmoid": lambda _, n, ins: 1.0 / (1.0 + np.exp(-ins[0])),
    "softmax": _np_softmax,
    "maxpool": _np_maxpool,
    "add": _np_add,
    "shunt": lambda _, n, ins: ins[0] / (n.attrs["decay"] + ins[1]),
    "gap": lambda _, n, ins: ins[0].mean(axis=(2, 3)),
    "flatten": _np_flatten,
    "dense": _np_dense,
}


def run_numpy(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Evaluate ``graph`` with plain numpy (float64), layer by layer.

    A slow, obviously-correct reference for tests of the ONNX and torch runtimes.

    Args:
        graph: the network.
        x: (N, C, H, W) input as the network expects it (already normalised).

    Returns:
        ``{output name: array}`` in float64.
    """
    vals = interpret(graph, None, np.asarray(x, dtype=np.float64), NUMPY_KERNELS, "numpy")
    return {out: vals[src] for src, out in graph.outputs}
