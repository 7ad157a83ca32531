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
from typing import Any

import numpy as np

from streamer.affect.graph import Graph, Node, conv_out, same_pads
from streamer.affect.keras_h5 import KerasFile, KerasLayer, WeightBook
from streamer.errors import WeightsError

logger = logging.getLogger(__name__)

__all__ = ["graph_from_keras", "keras_bn_node", "keras_conv_node", "keras_dense_node"]

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "softmax": "softmax", "sigmoid": "sigmoid"}


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    return int(v[0]), int(v[1])


def _spatial(
    shape: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int], padding: str
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    _, h, w = shape
    ho = conv_out(h, kernel[0], strides[0], padding)
    wo = conv_out(w, kernel[1], strides[1], padding)
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
    filters = int(cfg["filters"])
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
    units = int(cfg["units"])
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
    formats = {str(f) for lay in kf.layers if (f := lay.config.get("data_format"))}
    if len(formats) > 1:
        raise WeightsError(f"{kf.path}: mixed data formats {sorted(formats)} not supported")
    return formats.pop() if formats else "channels_last"


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
    fmt = _data_format(kf)
    channel_axis = 1 if fmt == "channels_first" else -1
    book = kf.weights
    nodes: list[Node] = []
    alias: dict[str, str] = {}  # keras layer name -> node name holding its output
    by_name: dict[str, Node] = {}

    def add(node: Node) -> Node:
        nodes.append(node)
        by_name[node.name] = node
        return node

    def src_of(lay: KerasLayer, i: int = 0) -> Node:
        try:
            return by_name[alias[lay.inbound[i]]]
        except (KeyError, IndexError) as err:
            raise WeightsError(
                f"{kf.path}: layer {lay.name!r}: input {err} not defined before it"
            ) from err

    for lay in kf.layers:
        cfg, cls = lay.config, lay.class_name
        if cls == "InputLayer":
            if nodes:
                raise WeightsError(f"{kf.path}: layer {lay.name!r}: only one input supported")
            shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
            if not shape or len(shape) != 4:
                raise WeightsError(f"{kf.path}: layer {lay.name!r}: expected an image input")
            dims = shape[1:]
            chw = (
                (dims[0], dims[1], dims[2])
                if fmt == "channels_first"
                else (dims[2], dims[0], dims[1])
            )
            out = add(Node("input", lay.name, (), tuple(int(d) for d in chw)))
        elif cls == "Conv2D":
            conv = add(keras_conv_node(book, lay.name, cfg, src_of(lay)))
            act = _activation(book, lay.name, cfg.get("activation"), conv, f"{lay.name}/act")
            out = add(act) if act else conv
        elif cls in ("SeparableConv2D", "DepthwiseConv2D"):
            src = src_of(lay)
            c_in = src.shape[0]
            mult = int(cfg.get("depth_multiplier", 1))
            k = _pair(cfg["kernel_size"])
            s = _pair(cfg.get("strides", 1))
            if _pair(cfg.get("dilation_rate", 1)) != (1, 1):
                raise WeightsError(f"{kf.path}: layer {lay.name!r}: dilation not supported")
            dw = book.take(lay.name, "depthwise_kernel", (k[0], k[1], c_in, mult))
            # Keras output channel c*mult + m comes from input c and multiplier m.
            w_dw = dw.reshape(k[0], k[1], c_in * mult).transpose(2, 0, 1)[:, None]
            (ho, wo), pads = _spatial(src.shape, k, s, cfg.get("padding", "valid"))
            dw_name = lay.name if cls == "DepthwiseConv2D" else f"{lay.name}/depthwise"
            dparams = {"W": np.ascontiguousarray(w_dw)}
            if cls == "DepthwiseConv2D" and cfg.get("use_bias", True):
                dparams["b"] = book.take(lay.name, "bias", (c_in * mult,))
            conv = add(
                Node(
                    "conv",
                    dw_name,
                    (src.name,),
                    (c_in * mult, ho, wo),
                    {"strides": s, "pads": pads, "group": c_in},
                    dparams,
                )
            )
            if cls == "SeparableConv2D":
                filters = int(cfg["filters"])
                pw = book.take(lay.name, "pointwise_kernel", (1, 1, c_in * mult, filters))
                pparams = {"W": np.ascontiguousarray(pw.transpose(3, 2, 0, 1))}
                if cfg.get("use_bias", True):
                    pparams["b"] = book.take(lay.name, "bias", (filters,))
                conv = add(
                    Node(
                        "conv",
                        lay.name,
                        (conv.name,),
                        (filters, ho, wo),
                        {"strides": (1, 1), "pads": (0, 0, 0, 0), "group": 1},
                        pparams,
                    )
                )
            act = _activation(book, lay.name, cfg.get("activation"), conv, f"{lay.name}/act")
            out = add(act) if act else conv
        elif cls == "BatchNormalization":
            out = add(keras_bn_node(book, lay.name, cfg, src_of(lay), channel_axis))
        elif cls == "Activation":
            src = src_of(lay)
            act = _activation(book, lay.name, cfg.get("activation"), src, lay.name)
            out = add(act) if act else src
        elif cls == "ReLU":
            out = add(Node("relu", lay.name, (src_of(lay).name,), src_of(lay).shape))
        elif cls == "MaxPooling2D":
            src = src_of(lay)
            k = _pair(cfg.get("pool_size", 2))
            s = _pair(cfg.get("strides") or k)
            (ho, wo), pads = _spatial(src.shape, k, s, cfg.get("padding", "valid"))
            out = add(
                Node(
                    "maxpool",
                    lay.name,
                    (src.name,),
                    (src.shape[0], ho, wo),
                    {"kernel": k, "strides": s, "pads": pads},
                )
            )
        elif cls == "Add":
            srcs = [src_of(lay, i) for i in range(len(lay.inbound))]
            if len({s.shape for s in srcs}) != 1:
                raise WeightsError(f"{kf.path}: layer {lay.name!r}: Add of different shapes")
            out = add(Node("add", lay.name, tuple(s.name for s in srcs), srcs[0].shape))
        elif cls == "GlobalAveragePooling2D":
            src = src_of(lay)
            out = add(Node("gap", lay.name, (src.name,), (src.shape[0],)))
        elif cls == "Flatten":
            src = src_of(lay)
            # Keras flattens in its tensor layout; a channels_first Flatten (Keras >= 2.2)
            # permutes to channels_last first.
            hwc = fmt == "channels_last" or cfg.get("data_format") == "channels_first"
            out = add(
                Node(
                    "flatten",
                    lay.name,
                    (src.name,),
                    (int(np.prod(src.shape)),),
                    {"channels_last": hwc},
                )
            )
        elif cls == "Dense":
            dense = add(keras_dense_node(book, lay.name, cfg, src_of(lay)))
            act = _activation(book, lay.name, cfg.get("activation"), dense, f"{lay.name}/act")
            out = add(act) if act else dense
        elif cls in ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout"):
            out = src_of(lay)  # identity at inference
        else:
            raise WeightsError(
                f"{kf.path}: layer {lay.name!r}: layer class {cls} cannot be imported from "
                "the architecture JSON"
            )
        alias[lay.name] = out.name
    book.check_all_used()
    outputs = []
    for o in kf.output_layers:
        if o not in alias:
            raise WeightsError(f"{kf.path}: layer {o!r}: output layer not in the architecture")
        outputs.append((alias[o], o))
    graph = Graph(name or kf.path.stem, nodes, outputs)
    logger.debug("imported %s: %d nodes, %d parameters", kf.path, len(nodes), graph.param_count)
    return graph
