"""FaceChannel V1 (dimensional): its known architecture, weights from Keras HDF5.

Barros, P., Churamani, N., & Sciutti, A. (2020). The FaceChannel: A Fast & Furious Deep
Neural Network for Facial Expression Recognition. SN Computer Science 1, 321.
Reference implementation: pablovin/FaceChannel, ``src/FaceChannel/FaceChannelV1/
FaceChannelV1.py`` (``buildFaceChannel`` + ``getDimensionalModel``) and
``imageProcessingUtil.py`` (``preProcess``: BGR -> gray, resize to 64x64, /255).

The network (channels first, input 1x64x64 gray in [0, 1])::

    Vision_conv1 64 -> BN -> ReLU, Vision_conv2 64 -> BN -> ReLU, maxpool 2
    Vision_conv3 128 -> BN -> ReLU, Vision_conv4 128 -> BN -> ReLU, maxpool 2
    Vision_conv5/6/7 128 -> BN -> ReLU, maxpool 2
    Vision_conv8 256 -> BN -> ReLU, conv9 256 -> BN -> ReLU
    conv10 256 ReLU, conv10_inhibition 256 ReLU -> conv10 / (0.5 + conv10_inhibition)
    maxpool 2 -> flatten (4096) -> denseLayer 200 ReLU
    -> arousal_output 1 tanh, valence_output 1 tanh

All convolutions are 3x3, ``same``, with bias. Dropout (0.25 after each pool) is off at
inference. The shunting inhibition is a Keras ``Lambda``: it cannot be rebuilt from the
file's JSON, so the graph is built here and the weights are mapped by layer name (the
unnamed BatchNormalization layers by the conv that feeds them in the file's JSON, or by
file order when the file has no architecture).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from streamer.affect.graph import Graph, Node
from streamer.affect.keras_graph import keras_bn_node, keras_conv_node, keras_dense_node
from streamer.affect.keras_h5 import KerasFile
from streamer.errors import WeightsError

logger = logging.getLogger(__name__)

__all__ = [
    "CONV_BLOCKS",
    "INHIBITION_DECAY",
    "INPUT_SHAPE",
    "facechannel_graph",
    "keras_model_config",
    "parameter_count",
    "random_keras_weights",
]

INPUT_SHAPE = (1, 64, 64)
INHIBITION_DECAY = 0.5
# (layer name, filters, followed by BatchNorm + ReLU, followed by 2x2 max-pool)
CONV_BLOCKS: tuple[tuple[str, int, bool, bool], ...] = (
    ("Vision_conv1", 64, True, False),
    ("Vision_conv2", 64, True, True),
    ("Vision_conv3", 128, True, False),
    ("Vision_conv4", 128, True, True),
    ("Vision_conv5", 128, True, False),
    ("Vision_conv6", 128, True, False),
    ("Vision_conv7", 128, True, True),
    ("Vision_conv8", 256, True, False),
    ("conv9", 256, True, False),
)
DENSE_UNITS = 200


def parameter_count() -> int:
    """Weight values of FaceChannel V1 (dimensional), from its architecture: the most a
    file imported as FaceChannel may declare (``models.FACECHANNEL_PARAMS``)."""
    total, c_in = 0, INPUT_SHAPE[0]
    for _, filters, bn, _ in CONV_BLOCKS:
        total += 9 * c_in * filters + filters + (4 * filters if bn else 0)
        c_in = filters
    total += 2 * (9 * c_in * 256 + 256)  # conv10 and conv10_inhibition
    flat = 256 * (INPUT_SHAPE[1] // 16) * (INPUT_SHAPE[2] // 16)
    return total + flat * DENSE_UNITS + DENSE_UNITS + 2 * (DENSE_UNITS + 1)


def _bn_names(kf: KerasFile) -> dict[str, str]:
    """Map each conv of CONV_BLOCKS to the BatchNormalization layer that follows it."""
    convs = [name for name, _, bn, _ in CONV_BLOCKS if bn]
    if kf.layers:
        out: dict[str, str] = {}
        for conv in convs:
            bns = [c.name for c in kf.consumers(conv) if c.class_name == "BatchNormalization"]
            if len(bns) != 1:
                raise WeightsError(
                    f"{kf.path}: layer {conv!r}: expected one BatchNormalization after it in "
                    f"the architecture, found {len(bns)}"
                )
            out[conv] = bns[0]
        return out
    bns = [n for n in kf.weights.layer_names() if kf.weights.has(n, "moving_mean")]
    if len(bns) != len(convs):
        raise WeightsError(
            f"{kf.path}: expected {len(convs)} BatchNormalization layers, found {len(bns)}"
        )
    return dict(zip(convs, bns, strict=True))


def _flatten_channels_last(kf: KerasFile) -> bool:
    """Whether Flatten permutes to channels-last first (Keras >= 2.2 channels_first
    Flatten does; older Keras and files without a Flatten data_format do not)."""
    for lay in kf.layers:
        if lay.class_name == "Flatten":
            return lay.config.get("data_format") == "channels_first"
    return False


def facechannel_graph(kf: KerasFile) -> Graph:
    """Build FaceChannel V1 (dimensional) with the weights of ``kf``.

    Args:
        kf: ``DimensionalFaceChannel.h5`` (or a file in the same layout).

    Returns:
        The graph; outputs ``arousal_output`` and ``valence_output`` (N, 1) each.

    Raises:
        WeightsError: a missing layer, a wrong shape, or weights the network does not
            use; the message names the file and the layer.
    """
    book = kf.weights
    bn_of = _bn_names(kf)
    for lay in kf.layers:
        fmt = lay.config.get("data_format")
        if lay.class_name == "Conv2D" and fmt not in (None, "channels_first"):
            raise WeightsError(
                f"{kf.path}: layer {lay.name!r}: data_format {fmt!r}, FaceChannel is channels_first"
            )
    conv_cfg = {"kernel_size": (3, 3), "strides": (1, 1), "padding": "same", "use_bias": True}
    nodes: list[Node] = [Node("input", "Vision_Network_Input", (), INPUT_SHAPE)]
    src = nodes[0]
    for name, filters, bn, pool in CONV_BLOCKS:
        src = keras_conv_node(book, name, {**conv_cfg, "filters": filters}, src)
        nodes.append(src)
        if bn:
            src = keras_bn_node(
                book,
                bn_of[name],
                {"axis": 1, "epsilon": _eps(kf, bn_of[name])},
                src,
                channel_axis=1,
            )
            nodes.append(src)
            src = Node("relu", f"{name}/relu", (src.name,), src.shape)
            nodes.append(src)
        if pool:
            src = _pool(src)
            nodes.append(src)
    branches = []
    for name in ("conv10", "conv10_inhibition"):
        conv = keras_conv_node(book, name, {**conv_cfg, "filters": 256}, src)
        relu = Node("relu", f"{name}/relu", (conv.name,), conv.shape)
        nodes += [conv, relu]
        branches.append(relu)
    shunt = Node(
        "shunt",
        "shunting_inhibition",
        (branches[0].name, branches[1].name),
        branches[0].shape,
        {"decay": INHIBITION_DECAY},
    )
    pooled = _pool(shunt)
    flat = Node(
        "flatten",
        "flatten",
        (pooled.name,),
        (int(np.prod(pooled.shape)),),
        {"channels_last": _flatten_channels_last(kf)},
    )
    dense = keras_dense_node(book, "denseLayer", {"units": DENSE_UNITS}, flat)
    dense_relu = Node("relu", "denseLayer/relu", (dense.name,), dense.shape)
    nodes += [shunt, pooled, flat, dense, dense_relu]
    outputs = []
    for head in ("arousal_output", "valence_output"):
        d = keras_dense_node(book, head, {"units": 1}, dense_relu)
        t = Node("tanh", f"{head}/tanh", (d.name,), d.shape)
        nodes += [d, t]
        outputs.append((t.name, head))
    book.check_all_used()
    graph = Graph("facechannel-v1", nodes, outputs)
    logger.debug("FaceChannel from %s: %d parameters", kf.path, graph.param_count)
    return graph


def _eps(kf: KerasFile, bn_layer: str) -> float:
    if not kf.layers:
        return 1e-3  # Keras' default
    raw = kf.layer(bn_layer).config.get("epsilon", 1e-3)
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 < raw < 1:
        raise WeightsError(
            f"{kf.path}: layer {bn_layer!r}: malformed layer config: epsilon {str(raw)[:40]}"
        )
    return float(raw)


def _pool(src: Node) -> Node:
    c, h, w = src.shape
    return Node(
        "maxpool",
        f"{src.name}/pool",
        (src.name,),
        (c, h // 2, w // 2),
        {"kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0)},
    )


# -- the same network in Keras' file layout (for round trips, tests and benchmarks) ----


def keras_layer_names() -> dict[str, str]:
    """conv name -> the BatchNormalization layer name Keras 2.2 gives it."""
    convs = [name for name, _, bn, _ in CONV_BLOCKS if bn]
    return {conv: f"batch_normalization_{i + 1}" for i, conv in enumerate(convs)}


_K_CONV = {
    "kernel_size": [3, 3],
    "strides": [1, 1],
    "padding": "same",
    "data_format": "channels_first",
    "dilation_rate": [1, 1],
    "use_bias": True,
}
_K_BN = {"axis": 1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}
_K_POOL = {
    "pool_size": [2, 2],
    "strides": [2, 2],
    "padding": "valid",
    "data_format": "channels_first",
}


class _KerasLayers:
    """Collects layer entries of a Keras model config, numbering unnamed ones as Keras does."""

    def __init__(self) -> None:
        self.layers: list[dict[str, Any]] = []
        self._counts: dict[str, int] = {}

    def add(self, cls: str, name: str, config: dict[str, Any], *inbound: str) -> str:
        self.layers.append(
            {
                "class_name": cls,
                "name": name,
                "config": {"name": name, "trainable": True, **config},
                "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else [],
            }
        )
        return name

    def numbered(self, cls: str, prefix: str, config: dict[str, Any], *inbound: str) -> str:
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        return self.add(cls, f"{prefix}_{self._counts[prefix]}", config, *inbound)

    def pool_and_dropout(self, src: str) -> str:
        pooled = self.numbered("MaxPooling2D", "max_pooling2d", _K_POOL, src)
        return self.numbered("Dropout", "dropout", {"rate": 0.25}, pooled)


def keras_model_config(flatten_data_format: str | None = "channels_first") -> dict[str, Any]:
    """The architecture JSON of FaceChannel V1 (dimensional) as Keras 2.2 writes it.

    Args:
        flatten_data_format: the Flatten layer's ``data_format`` (None: key absent, as
            in Keras < 2.2).
    """
    k = _KerasLayers()
    bn_names = keras_layer_names()
    input_cfg = {"batch_input_shape": [None, *INPUT_SHAPE], "dtype": "float32"}
    prev = k.add("InputLayer", "Vision_Network_Input", input_cfg)
    for name, filters, bn, pool in CONV_BLOCKS:
        prev = k.add("Conv2D", name, {**_K_CONV, "filters": filters, "activation": "linear"}, prev)
        if bn:
            prev = k.add("BatchNormalization", bn_names[name], _K_BN, prev)
            prev = k.numbered("Activation", "activation", {"activation": "relu"}, prev)
        if pool:
            prev = k.pool_and_dropout(prev)
    conv10 = {**_K_CONV, "filters": 256, "activation": "relu"}
    c10 = k.add("Conv2D", "conv10", conv10, prev)
    c10i = k.add("Conv2D", "conv10_inhibition", conv10, prev)
    lambda_cfg = {"function": ["<bytecode>", None, None], "function_type": "lambda"}
    prev = k.pool_and_dropout(k.add("Lambda", "lambda_1", lambda_cfg, c10, c10i))
    flat_cfg = {} if flatten_data_format is None else {"data_format": flatten_data_format}
    prev = k.add("Flatten", "flatten_1", flat_cfg, prev)
    dense_cfg = {"units": DENSE_UNITS, "activation": "relu", "use_bias": True}
    prev = k.add("Dense", "denseLayer", dense_cfg, prev)
    for head in ("arousal_output", "valence_output"):
        k.add("Dense", head, {"units": 1, "activation": "tanh", "use_bias": True}, prev)
    return {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": k.layers,
            "input_layers": [["Vision_Network_Input", 0, 0]],
            "output_layers": [["arousal_output", 0, 0], ["valence_output", 0, 0]],
        },
    }


def random_keras_weights(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Random FaceChannel weights in Keras layout (He-scaled kernels, plausible BN stats).

    Used where the real weights are absent (benchmarks of the architecture) and in tests.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    bn_names = keras_layer_names()
    c_in = INPUT_SHAPE[0]

    def conv(name: str, c: int, filters: int) -> None:
        std = np.sqrt(2.0 / (9 * c))
        out[name] = {
            "kernel": rng.normal(0, std, (3, 3, c, filters)).astype(np.float32),
            "bias": rng.normal(0, 0.05, filters).astype(np.float32),
        }

    for name, filters, bn, _ in CONV_BLOCKS:
        conv(name, c_in, filters)
        if bn:
            out[bn_names[name]] = {
                "gamma": rng.uniform(0.5, 1.5, filters).astype(np.float32),
                "beta": rng.normal(0, 0.1, filters).astype(np.float32),
                "moving_mean": rng.normal(0, 0.1, filters).astype(np.float32),
                "moving_variance": rng.uniform(0.5, 2.0, filters).astype(np.float32),
            }
        c_in = filters
    conv("conv10", c_in, 256)
    conv("conv10_inhibition", c_in, 256)
    flat = 256 * (INPUT_SHAPE[1] // 16) * (INPUT_SHAPE[2] // 16)
    out["denseLayer"] = {
        "kernel": rng.normal(0, np.sqrt(2.0 / flat), (flat, DENSE_UNITS)).astype(np.float32),
        "bias": np.zeros(DENSE_UNITS, np.float32),
    }
    for head in ("arousal_output", "valence_output"):
        out[head] = {
            "kernel": rng.normal(0, np.sqrt(1.0 / DENSE_UNITS), (DENSE_UNITS, 1)).astype(
                np.float32
            ),
            "bias": np.zeros(1, np.float32),
        }
    return out
