"""Turn a parsed Keras file (architecture JSON + weights) into a :class:`Graph`.

Layers are mapped by name; every weight is taken from the file with the shape the layer
config implies, and every weight in the file must be used. Kernels are converted from
Keras' HWIO to OIHW; tensors are NCHW inside the graph whatever the file's
``data_format`` (a ``channels_last`` input of shape (H, W, 1) is the same memory as
(1, H, W), and ``Flatten`` keeps Keras' element order).

Supported layer classes: InputLayer, Conv2D, SeparableConv2D, DepthwiseConv2D,
BatchNormalization, Activation, ReLU, MaxPooling2D, Add, GlobalAveragePooling2D,
Flatten, Dense, Dropout. Lambda layers (e.g. FaceChannel's shunting inhibition) cannot be
rebuilt from JSON: such networks are built from their known architecture instead
(:mod:`streamer.affect.facechannel`), reading weights from the same file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.affect.graph import Graph, Node, conv_out, same_pads
from streamer.affect.keras_h5 import KerasFile, KerasLayer, WeightBook
from streamer.errors import WeightsError

logger = logging.getLogger(__name__)

__all__ = ["graph_from_keras", "keras_bn_node", "keras_conv_node", "keras_dense_node"]

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "softmax": "softmax", "sigmoid": "sigmoid"}


def _pair(v: Any) -> tuple[int, int]:
    """A Keras size or stride (an int or a pair of ints), each at least 1.

    Raises:
        ValueError, TypeError: anything else (the caller names the layer).
    """
    pair = (v, v) if isinstance(v, int) else (v[0], v[1])
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in pair):
        raise ValueError(f"expected a positive integer or a pair of them, got {str(v)[:40]}")
    return pair[0], pair[1]


def _positive(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{what} must be a positive integer, got {str(v)[:40]}")
    return v


def _spatial(
    shape: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int], padding: str
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    _, h, w = shape
    ho = conv_out(h, kernel[0], strides[0], padding)
    wo = conv_out(w, kernel[1], strides[1], padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kernel} window leaves no output of a {h}x{w} input")
    pt, pb = same_pads(h, kernel[0], strides[0], padding)
    pl, pr = same_pads(w, kernel[1], strides[1], padding)
    return (ho, wo), (pt, pl, pb, pr)


def keras_conv_node(
    book: WeightBook,
    layer: str,
    cfg: dict[str, Any],
    src: Node,
    name: str | None = None,
) -> Node:
    """A Conv2D layer as a ``conv`` node (without its activation)."""
    c_in = src.shape[0]
    filters = _positive(cfg["filters"], "filters")
    k = _pair(cfg["kernel_size"])
    s = _pair(cfg.get("strides", 1))
    if _pair(cfg.get("dilation_rate", 1)) != (1, 1):
        raise WeightsError(f"{book.path}: layer {layer!r}: dilated convolution not supported")
    kernel = book.take(layer, "kernel", (k[0], k[1], c_in, filters))
    params = {"W": np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))}
    if cfg.get("use_bias", True):
        params["b"] = book.take(layer, "bias", (filters,))
    (ho, wo), pads = _spatial(src.shape, k, s, cfg.get("padding", "valid"))
    return Node(
        "conv",
        name or layer,
        (src.name,),
        (filters, ho, wo),
        {"strides": s, "pads": pads, "group": 1},
        params,
    )


def keras_bn_node(
    book: WeightBook, layer: str, cfg: dict[str, Any], src: Node, channel_axis: int
) -> Node:
    """A BatchNormalization layer as a ``bn`` node over the channel axis."""
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) else axis
    rank = len(src.shape) + 1
    if axis % rank != channel_axis % rank:
        raise WeightsError(
            f"{book.path}: layer {layer!r}: BatchNormalization over axis {axis}, expected the "
            f"channel axis {channel_axis}"
        )
    c = src.shape[0]
    gamma = book.take(layer, "gamma", (c,)) if cfg.get("scale", True) else np.ones(c, np.float32)
    beta = book.take(layer, "beta", (c,)) if cfg.get("center", True) else np.zeros(c, np.float32)
    params = {
        "gamma": gamma,
        "beta": beta,
        "mean": book.take(layer, "moving_mean", (c,)),
        "var": book.take(layer, "moving_variance", (c,)),
    }
    return Node(
        "bn", layer, (src.name,), src.shape, {"eps": float(cfg.get("epsilon", 1e-3))}, params
    )


def keras_dense_node(book: WeightBook, layer: str, cfg: dict[str, Any], src: Node) -> Node:
    """A Dense layer as a ``dense`` node (without its activation)."""
    if len(src.shape) != 1:
        raise WeightsError(f"{book.path}: layer {layer!r}: Dense on a {len(src.shape)}-D input")
    units = _positive(cfg["units"], "units")
    w = book.take(layer, "kernel", (src.shape[0], units))
    if cfg.get("use_bias", True):
        b = book.take(layer, "bias", (units,))
    else:
        b = np.zeros(units, np.float32)
    return Node("dense", layer, (src.name,), (units,), {}, {"W": w, "b": b})


def _activation(book: WeightBook, layer: str, act: str | None, src: Node, name: str) -> Node | None:
    if act in ("linear", None):
        return None
    if act not in _ACTIVATIONS:
        raise WeightsError(f"{book.path}: layer {layer!r}: activation {act!r} not supported")
    return Node(_ACTIVATIONS[act], name, (src.name,), src.shape)


def _data_format(kf: KerasFile) -> str:
    formats = {str(f)[:40] for lay in kf.layers if (f := lay.config.get("data_format"))}
    if len(formats) > 1:
        raise WeightsError(f"{kf.path}: mixed data formats {sorted(formats)} not supported")
    return formats.pop() if formats else "channels_last"


class _Importer:
    """The state of one import: nodes so far and which node holds each layer's output."""

    def __init__(self, kf: KerasFile) -> None:
        self.kf = kf
        self.book = kf.weights
        self.fmt = _data_format(kf)
        self.channel_axis = 1 if self.fmt == "channels_first" else -1
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}  # keras layer name -> node name holding its output
        self.by_name: dict[str, Node] = {}

    def error(self, lay: KerasLayer | str, what: str) -> WeightsError:
        name = lay if isinstance(lay, str) else lay.name
        return WeightsError(f"{self.kf.path}: layer {name!r}: {what}")

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node

    def src_of(self, lay: KerasLayer, i: int = 0) -> Node:
        try:
            return self.by_name[self.alias[lay.inbound[i]]]
        except (KeyError, IndexError) as err:
            raise self.error(lay, f"input {err} not defined before it") from err

    def activated(self, lay: KerasLayer, node: Node) -> Node:
        """``node`` followed by the layer's ``activation`` (if any besides linear)."""
        act = _activation(
            self.book, lay.name, lay.config.get("activation"), node, f"{lay.name}/act"
        )
        return self.add(act) if act else node


def _input(im: _Importer, lay: KerasLayer) -> Node:
    if im.nodes:
        raise im.error(lay, "only one input supported")
    shape = lay.config.get("batch_input_shape") or lay.config.get("batch_shape")
    if not shape or len(shape) != 4:
        raise im.error(lay, "expected an image input")
    dims = [_positive(d, "each input dimension") for d in shape[1:]]
    chw = (dims[0], dims[1], dims[2]) if im.fmt == "channels_first" else (dims[2], dims[0], dims[1])
    return im.add(Node("input", lay.name, (), chw))


def _conv2d(im: _Importer, lay: KerasLayer) -> Node:
    return im.activated(lay, im.add(keras_conv_node(im.book, lay.name, lay.config, im.src_of(lay))))


def _depthwise(im: _Importer, lay: KerasLayer) -> Node:
    """DepthwiseConv2D, and the first half of SeparableConv2D: a conv with group = C_in."""
    cfg, src, separable = lay.config, im.src_of(lay), lay.class_name == "SeparableConv2D"
    c_in = src.shape[0]
    mult = _positive(cfg.get("depth_multiplier", 1), "depth_multiplier")
    k = _pair(cfg["kernel_size"])
    s = _pair(cfg.get("strides", 1))
    if _pair(cfg.get("dilation_rate", 1)) != (1, 1):
        raise im.error(lay, "dilation not supported")
    dw = im.book.take(lay.name, "depthwise_kernel", (k[0], k[1], c_in, mult))
    # Keras output channel c*mult + m comes from input c and multiplier m.
    w_dw = dw.reshape(k[0], k[1], c_in * mult).transpose(2, 0, 1)[:, None]
    (ho, wo), pads = _spatial(src.shape, k, s, cfg.get("padding", "valid"))
    params = {"W": np.ascontiguousarray(w_dw)}
    if not separable and cfg.get("use_bias", True):
        params["b"] = im.book.take(lay.name, "bias", (c_in * mult,))
    attrs = {"strides": s, "pads": pads, "group": c_in}
    name = f"{lay.name}/depthwise" if separable else lay.name
    conv = im.add(Node("conv", name, (src.name,), (c_in * mult, ho, wo), attrs, params))
    return im.activated(lay, _pointwise(im, lay, conv) if separable else conv)


def _pointwise(im: _Importer, lay: KerasLayer, src: Node) -> Node:
    """The 1x1 second half of a SeparableConv2D."""
    filters = _positive(lay.config["filters"], "filters")
    c, ho, wo = src.shape
    pw = im.book.take(lay.name, "pointwise_kernel", (1, 1, c, filters))
    params = {"W": np.ascontiguousarray(pw.transpose(3, 2, 0, 1))}
    if lay.config.get("use_bias", True):
        params["b"] = im.book.take(lay.name, "bias", (filters,))
    attrs = {"strides": (1, 1), "pads": (0, 0, 0, 0), "group": 1}
    return im.add(Node("conv", lay.name, (src.name,), (filters, ho, wo), attrs, params))


def _batchnorm(im: _Importer, lay: KerasLayer) -> Node:
    return im.add(keras_bn_node(im.book, lay.name, lay.config, im.src_of(lay), im.channel_axis))


def _activation_layer(im: _Importer, lay: KerasLayer) -> Node:
    src = im.src_of(lay)
    act = _activation(im.book, lay.name, lay.config.get("activation"), src, lay.name)
    return im.add(act) if act else src


def _relu(im: _Importer, lay: KerasLayer) -> Node:
    src = im.src_of(lay)
    return im.add(Node("relu", lay.name, (src.name,), src.shape))


def _maxpool(im: _Importer, lay: KerasLayer) -> Node:
    src = im.src_of(lay)
    k = _pair(lay.config.get("pool_size", 2))
    s = _pair(lay.config.get("strides") or k)
    (ho, wo), pads = _spatial(src.shape, k, s, lay.config.get("padding", "valid"))
    attrs = {"kernel": k, "strides": s, "pads": pads}
    return im.add(Node("maxpool", lay.name, (src.name,), (src.shape[0], ho, wo), attrs))


def _add(im: _Importer, lay: KerasLayer) -> Node:
    srcs = [im.src_of(lay, i) for i in range(len(lay.inbound))]
    if len({s.shape for s in srcs}) != 1:
        raise im.error(lay, "Add of different shapes")
    return im.add(Node("add", lay.name, tuple(s.name for s in srcs), srcs[0].shape))


def _gap(im: _Importer, lay: KerasLayer) -> Node:
    src = im.src_of(lay)
    return im.add(Node("gap", lay.name, (src.name,), (src.shape[0],)))


def _flatten(im: _Importer, lay: KerasLayer) -> Node:
    src = im.src_of(lay)
    # Keras flattens in its tensor layout; a channels_first Flatten (Keras >= 2.2)
    # permutes to channels_last first.
    hwc = im.fmt == "channels_last" or lay.config.get("data_format") == "channels_first"
    size = (int(np.prod(src.shape)),)
    return im.add(Node("flatten", lay.name, (src.name,), size, {"channels_last": hwc}))


def _dense(im: _Importer, lay: KerasLayer) -> Node:
    return im.activated(
        lay, im.add(keras_dense_node(im.book, lay.name, lay.config, im.src_of(lay)))
    )


def _identity(im: _Importer, lay: KerasLayer) -> Node:
    return im.src_of(lay)  # identity at inference


_LAYERS: dict[str, Callable[[_Importer, KerasLayer], Node]] = {
    "InputLayer": _input,
    "Conv2D": _conv2d,
    "SeparableConv2D": _depthwise,
    "DepthwiseConv2D": _depthwise,
    "BatchNormalization": _batchnorm,
    "Activation": _activation_layer,
    "ReLU": _relu,
    "MaxPooling2D": _maxpool,
    "Add": _add,
    "GlobalAveragePooling2D": _gap,
    "Flatten": _flatten,
    "Dense": _dense,
    "Dropout": _identity,
    "SpatialDropout2D": _identity,
    "GaussianNoise": _identity,
    "GaussianDropout": _identity,
}
"""Keras layer class -> the function that adds its nodes and returns its output node."""


def graph_from_keras(kf: KerasFile, name: str | None = None) -> Graph:
    """Build the network described by ``kf``'s architecture JSON with its weights.

    Args:
        kf: a file read with :func:`~streamer.affect.keras_h5.read_keras_h5`.
        name: graph name (default: the file's stem).

    Returns:
        The graph; all weights of the file have been used (checked).

    Raises:
        WeightsError: no architecture, an unsupported layer, or any weight mismatch;
            the message names the file and the layer.
    """
    if not kf.layers:
        raise WeightsError(f"{kf.path}: no architecture JSON (model_config) in the file")
    im = _Importer(kf)
    for lay in kf.layers:
        layer = _LAYERS.get(lay.class_name)
        if layer is None:
            raise im.error(
                lay, f"layer class {lay.class_name} cannot be imported from the architecture JSON"
            )
        try:
            im.alias[lay.name] = layer(im, lay).name
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as err:
            # The JSON is the file's: a wrong type, a zero stride or a missing key is a
            # malformed layer, said in one line (a WeightsError passes through as is).
            why = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            raise im.error(lay, f"malformed layer config: {why[:200]}") from err
    im.book.check_all_used()
    outputs = []
    for o in kf.output_layers:
        if o not in im.alias:
            raise im.error(o, "output layer not in the architecture")
        outputs.append((im.alias[o], o))
    graph = Graph(name or kf.path.stem, im.nodes, outputs)
    logger.debug("imported %s: %d nodes, %d parameters", kf.path, len(im.nodes), graph.param_count)
    return graph
