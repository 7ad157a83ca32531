"""Read Keras 2.x HDF5 model files with h5py only (no TensorFlow).

A Keras ``model.save("x.h5")`` file holds the architecture as JSON in the root attribute
``model_config`` and the weights under ``model_weights/<layer>/<...>/<weight>:0``; the
layer group's attribute ``weight_names`` lists each weight's path inside the group. A
``model.save_weights()`` file has the layer groups at the root and no architecture.

:func:`read_keras_h5` returns a :class:`KerasFile`: the layers in file order (class,
config, inbound layer names) and a :class:`WeightBook` of every weight tensor. Network
builders *take* tensors from the book by layer and weight name with the shape they
expect; :meth:`WeightBook.check_all_used` then proves that nothing in the file was left
over. Every mismatch raises :class:`~streamer.errors.WeightsError` naming the file and
the layer::

    kf = read_keras_h5(Path("emotion_model.hdf5"))
    kernel = kf.weights.take("conv2d_1", "kernel", (3, 3, 1, 8))
    ...
    kf.weights.check_all_used()
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from streamer.errors import WeightsError

logger = logging.getLogger(__name__)

__all__ = ["KerasFile", "KerasLayer", "WeightBook", "read_keras_h5", "write_keras_h5"]


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the architecture JSON.

    Attributes:
        name: the layer's unique name (the key of its weight group).
        class_name: Keras class, e.g. ``"Conv2D"``.
        config: the layer's ``config`` dict from the JSON.
        inbound: names of the layers feeding it, in call order (empty for inputs).
    """

    name: str
    class_name: str
    config: dict[str, Any]
    inbound: tuple[str, ...]


@dataclass
class WeightBook:
    """Every weight tensor of a file, handed out once each, shape-checked.

    Attributes:
        path: the file the weights came from (named in every error).
        tensors: ``{layer: {weight: array}}``; weight names are short (``"kernel"``).
    """

    path: Path
    tensors: dict[str, dict[str, np.ndarray]]
    _used: set[tuple[str, str]] = field(default_factory=set)

    def layer_names(self) -> list[str]:
        """Names of the layers that own weights, in file order."""
        return list(self.tensors)

    def has(self, layer: str, weight: str | None = None) -> bool:
        """Whether ``layer`` (and, if given, its ``weight``) is in the file."""
        if layer not in self.tensors:
            return False
        return weight is None or weight in self.tensors[layer]

    def take(self, layer: str, weight: str, shape: tuple[int, ...]) -> np.ndarray:
        """Return weight ``weight`` of ``layer`` as float32, checking its shape.

        Args:
            layer: layer name as in the file.
            weight: short weight name (``"kernel"``, ``"bias"``, ``"gamma"``, ...).
            shape: the shape the network needs.

        Raises:
            WeightsError: the layer or weight is missing, or its shape differs.
        """
        if layer not in self.tensors:
            raise WeightsError(f"{self.path}: layer {layer!r}: missing from the weights file")
        arrays = self.tensors[layer]
        if weight not in arrays:
            have = ", ".join(sorted(arrays)) or "none"
            raise WeightsError(
                f"{self.path}: layer {layer!r}: weight {weight!r} missing (file has: {have})"
            )
        arr = arrays[weight]
        if tuple(arr.shape) != tuple(shape):
            raise WeightsError(
                f"{self.path}: layer {layer!r}: weight {weight!r} has shape "
                f"{tuple(arr.shape)}, expected {tuple(shape)}"
            )
        self._used.add((layer, weight))
        return arr

    def unused(self) -> list[str]:
        """``layer/weight`` names not taken yet."""
        return [
            f"{layer}/{w}"
            for layer, arrays in self.tensors.items()
            for w in arrays
            if (layer, w) not in self._used
        ]

    def check_all_used(self) -> None:
        """Raise :class:`WeightsError` naming the first layer whose weights were not used."""
        left = self.unused()
        if left:
            first_layer = left[0].split("/", 1)[0]
            more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
            raise WeightsError(
                f"{self.path}: layer {first_layer!r}: weight {left[0]!r} is not used by the "
                f"network{more}; wrong architecture for this file?"
            )

    @property
    def file_param_count(self) -> int:
        """Number of scalars in all weight tensors of the file (Keras' total params)."""
        return int(sum(a.size for arrays in self.tensors.values() for a in arrays.values()))

    @property
    def used_param_count(self) -> int:
        """Number of scalars taken so far."""
        return int(sum(self.tensors[layer][w].size for layer, w in self._used))


@dataclass
class KerasFile:
    """A parsed Keras HDF5 file.

    Attributes:
        path: the file.
        keras_version: ``keras_version`` attribute ("" when absent).
        backend: ``backend`` attribute ("" when absent).
        model_class: ``"Model"``, ``"Functional"`` or ``"Sequential"``; "" without JSON.
        layers: layers in JSON order (empty when the file has no architecture).
        input_layers: names of the model's input layers.
        output_layers: names of the model's output layers.
        weights: the weight tensors.
    """

    path: Path
    keras_version: str
    backend: str
    model_class: str
    layers: list[KerasLayer]
    input_layers: list[str]
    output_layers: list[str]
    weights: WeightBook

    def layer(self, name: str) -> KerasLayer:
        """The layer called ``name``.

        Raises:
            WeightsError: no such layer in the architecture.
        """
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise WeightsError(f"{self.path}: layer {name!r}: not in the model's architecture")

    def consumers(self, name: str) -> list[KerasLayer]:
        """Layers that take ``name``'s output as an input."""
        return [lay for lay in self.layers if name in lay.inbound]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _inbound_names(raw: Any) -> tuple[str, ...]:
    """Layer names from Keras 2 ``inbound_nodes``: ``[[[name, node, tensor, kwargs], ...]]``."""
    names: list[str] = []
    for node in raw or []:
        if isinstance(node, dict):  # Keras 3 layout: {"args": [...], "kwargs": {...}}
            raise ValueError("Keras 3 model format (inbound nodes as dicts) is not supported")
        for entry in node:
            names.append(str(entry[0]))
    return tuple(names)


def _parse_architecture(
    cfg: dict[str, Any],
) -> tuple[str, list[KerasLayer], list[str], list[str]]:
    class_name = str(cfg.get("class_name", ""))
    body: Any = cfg.get("config") or {}
    if class_name == "Sequential":
        raw_layers = body if isinstance(body, list) else body.get("layers", [])
        layers: list[KerasLayer] = []
        prev: str | None = None
        for raw in raw_layers:
            conf = dict(raw.get("config", {}))
            name = str(conf.get("name") or raw.get("name"))
            if raw.get("class_name") == "InputLayer":
                layers.append(KerasLayer(name, "InputLayer", conf, ()))
                prev = name
                continue
            if prev is None:
                shape = conf.get("batch_input_shape") or conf.get("batch_shape")
                inp = KerasLayer(f"{name}_input", "InputLayer", {"batch_input_shape": shape}, ())
                layers.append(inp)
                prev = inp.name
            layers.append(KerasLayer(name, str(raw["class_name"]), conf, (prev,)))
            prev = name
        ins = [layers[0].name] if layers else []
        outs = [layers[-1].name] if layers else []
        return class_name, layers, ins, outs
    if class_name in ("Model", "Functional"):
        layers = [
            KerasLayer(
                name=str(raw.get("name") or raw["config"]["name"]),
                class_name=str(raw["class_name"]),
                config=dict(raw.get("config", {})),
                inbound=_inbound_names(raw.get("inbound_nodes")),
            )
            for raw in body["layers"]
        ]
        ins = [str(x[0]) for x in body.get("input_layers", [])]
        outs = [str(x[0]) for x in body.get("output_layers", [])]
        return class_name, layers, ins, outs
    raise ValueError(f"unsupported model class {class_name!r}")


def _dataset_names(group: h5py.Group) -> list[str]:
    found: list[str] = []
    group.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return found


def _read_weights(path: Path, root: h5py.Group) -> dict[str, dict[str, np.ndarray]]:
    layer_names = [_text(n) for n in root.attrs.get("layer_names", [])]
    if not layer_names:  # some writers omit the attribute: take the groups in file order
        layer_names = [k for k in root if isinstance(root[k], h5py.Group)]
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer in layer_names:
        if layer not in root:
            raise WeightsError(f"{path}: layer {layer!r}: listed in layer_names but has no group")
        group = root[layer]
        names = [_text(n) for n in group.attrs.get("weight_names", [])]
        if not names:  # the attribute may be missing: walk the datasets
            names = _dataset_names(group)
        arrays: dict[str, np.ndarray] = {}
        for wname in names:
            if wname not in group:
                raise WeightsError(f"{path}: layer {layer!r}: weight {wname!r} listed but absent")
            short = wname.rsplit("/", 1)[-1].split(":", 1)[0]
            if short in arrays:
                raise WeightsError(f"{path}: layer {layer!r}: weight {short!r} appears twice")
            arrays[short] = np.asarray(group[wname][()], dtype=np.float32)
        if arrays:
            out[layer] = arrays
    return out


def read_keras_h5(path: Path) -> KerasFile:
    """Parse a Keras 2.x HDF5 model (or weights) file.

    Args:
        path: the ``.h5`` / ``.hdf5`` file.

    Returns:
        The architecture (when the file has one) and all weight tensors.

    Raises:
        WeightsError: the file is missing, not HDF5, or its structure is not Keras'.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise WeightsError(f"{path}: not an HDF5 file ({err})") from err
    with fh:
        try:
            keras_version = _text(fh.attrs.get("keras_version", ""))
            backend = _text(fh.attrs.get("backend", ""))
            model_class = ""
            layers: list[KerasLayer] = []
            ins: list[str] = []
            outs: list[str] = []
            if "model_config" in fh.attrs:
                try:
                    cfg = json.loads(_text(fh.attrs["model_config"]))
                    model_class, layers, ins, outs = _parse_architecture(cfg)
                except (ValueError, KeyError, TypeError) as err:
                    raise WeightsError(
                        f"{path}: cannot parse the architecture JSON (model_config): {err}"
                    ) from err
            root = fh.get("model_weights", fh)
            if "model_weights" in fh:
                keras_version = keras_version or _text(root.attrs.get("keras_version", ""))
            tensors = _read_weights(path, root)
        except (KeyError, OSError, TypeError) as err:
            raise WeightsError(f"{path}: not a Keras HDF5 model file ({err})") from err
    if not tensors:
        raise WeightsError(f"{path}: no weight tensors found (not a Keras model file?)")
    kf = KerasFile(
        path=path,
        keras_version=keras_version,
        backend=backend,
        model_class=model_class,
        layers=layers,
        input_layers=ins,
        output_layers=outs,
        weights=WeightBook(path, tensors),
    )
    logger.debug(
        "read %s: keras %s, %d layers, %d weight tensors, %d parameters",
        path,
        keras_version or "?",
        len(layers),
        sum(len(a) for a in tensors.values()),
        kf.weights.file_param_count,
    )
    return kf


def write_keras_h5(
    path: Path,
    weights: dict[str, dict[str, np.ndarray]],
    model_config: dict[str, Any] | None = None,
    keras_version: str = "2.2.4",
    backend: str = "tensorflow",
) -> None:
    """Write weights (and optionally an architecture) in Keras 2.x ``model.save`` layout.

    The inverse of :func:`read_keras_h5`, used to round-trip networks and to make
    malformed files in tests: ``model_weights/<layer>/<layer>/<weight>:0`` with the
    ``layer_names`` / ``weight_names`` attributes Keras writes.

    Args:
        path: output file.
        weights: ``{layer: {short weight name: array}}`` in layer order.
        model_config: the architecture dict (``{"class_name": ..., "config": ...}``).
        keras_version: value of the ``keras_version`` attribute.
        backend: value of the ``backend`` attribute.
    """
    with h5py.File(path, "w") as fh:
        fh.attrs["keras_version"] = keras_version.encode()
        fh.attrs["backend"] = backend.encode()
        if model_config is not None:
            fh.attrs["model_config"] = json.dumps(model_config).encode()
        root = fh.create_group("model_weights")
        root.attrs["keras_version"] = keras_version.encode()
        root.attrs["backend"] = backend.encode()
        root.attrs["layer_names"] = np.array([n.encode() for n in weights])
        for layer, arrays in weights.items():
            group = root.create_group(layer)
            names = [f"{layer}/{w}:0" for w in arrays]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for name, arr in zip(names, arrays.values(), strict=True):
                group.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
