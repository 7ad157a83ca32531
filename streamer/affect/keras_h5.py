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

    kf = read_keras_h5(Path("emotion_model.hdf5"), max_params=4_000_000)
    kernel = kf.weights.take("conv2d_1", "kernel", (3, 3, 1, 8))
    ...
    kf.weights.check_all_used()

The file is untrusted. Before any weight is read, the whole link tree is walked and the
file is refused (one line naming the file and the dataset, attribute or link) when it
holds an external or soft link, a virtual dataset, a dataset stored in another file
(external storage: the sha256 pin of the file would not cover it), a filter that needs a
plugin, weights that are not floating point, an attribute or a name list larger than
any Keras file writes, or weight datasets that together declare more than ``max_params``
values (a small file can declare terabytes of never-written chunks). Only then are the
weights read, so reading costs at most ``max_params`` values whatever the file declares.
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

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "KerasFile",
    "KerasLayer",
    "WeightBook",
    "read_keras_h5",
    "write_keras_h5",
]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
DEFAULT_MAX_PARAMS = 50_000_000  # weight values read at most when the caller sets no cap
MAX_CONFIG_BYTES = 4 << 20  # the architecture JSON attribute (FaceChannel's is ~20 KB)
MAX_NAMES = 100_000  # entries of a layer_names / weight_names attribute
MAX_LINKS = 200_000  # links walked in one file
MAX_LAYERS = 10_000  # layers of an architecture
MAX_CHUNKS = 1 << 20  # chunks of one weight dataset (tiny chunks make a read crawl)
# Filters built into HDF5 and h5py; any other id would load a plugin from the system.
_BUILTIN_FILTERS = {
    h5py.h5z.FILTER_DEFLATE,
    h5py.h5z.FILTER_SHUFFLE,
    h5py.h5z.FILTER_FLETCHER32,
    h5py.h5z.FILTER_SZIP,
    h5py.h5z.FILTER_NBIT,
    h5py.h5z.FILTER_SCALEOFFSET,
    h5py.h5z.FILTER_LZF,
}


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
    if not isinstance(raw, list | None):
        raise TypeError(f"inbound_nodes is a {type(raw).__name__}, expected a list")
    for node in raw or []:
        if isinstance(node, dict):  # Keras 3 layout: {"args": [...], "kwargs": {...}}
            raise ValueError("Keras 3 model format (inbound nodes as dicts) is not supported")
        if not isinstance(node, list):
            raise TypeError(f"an inbound node is a {type(node).__name__}, expected a list")
        for entry in node:
            if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
                raise TypeError(f"inbound entry {str(entry)[:60]} is not [layer name, ...]")
            names.append(entry[0])
    return tuple(names)


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is a {type(value).__name__}, expected an object")
    return value


def _layer_label(raw: Any, i: int) -> str:
    """A layer's name for an error message, from whatever the JSON holds."""
    if isinstance(raw, dict):
        conf = raw.get("config")
        name = raw.get("name") or (conf.get("name") if isinstance(conf, dict) else None)
        if isinstance(name, str) and name:
            return name[:80]
    return f"#{i + 1}"


def _parse_architecture(
    path: Path,
    cfg: Any,
) -> tuple[str, list[KerasLayer], list[str], list[str]]:
    """The layers of the architecture JSON; a malformed entry raises WeightsError naming
    the layer (by name when it has one, else by position)."""
    try:
        cfg = _dict(cfg, "the architecture")
        class_name = str(cfg.get("class_name", ""))
        body: Any = cfg.get("config") or {}
        if class_name == "Sequential":
            raw_layers = body if isinstance(body, list) else _dict(body, "config").get("layers")
        elif class_name in ("Model", "Functional"):
            raw_layers = _dict(body, "config").get("layers")
        else:
            raise ValueError(f"unsupported model class {class_name[:40]!r}")
        if not isinstance(raw_layers, list):
            raise TypeError("the layer list is missing or not a list")
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{path}: cannot parse the architecture JSON: {err}") from err
    if len(raw_layers) > MAX_LAYERS:
        raise WeightsError(
            f"{path}: the architecture JSON lists {len(raw_layers)} layers (at most {MAX_LAYERS})"
        )
    layers: list[KerasLayer] = []
    prev: str | None = None
    for i, raw in enumerate(raw_layers):
        try:
            if class_name == "Sequential":
                prev = _sequential_layer(_dict(raw, "the layer"), layers, prev)
            else:
                layers.append(_functional_layer(_dict(raw, "the layer")))
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            why = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            raise WeightsError(
                f"{path}: layer {_layer_label(raw, i)!r}: malformed architecture entry: {why}"
            ) from err
    if class_name == "Sequential":
        ins = [layers[0].name] if layers else []
        outs = [layers[-1].name] if layers else []
        return class_name, layers, ins, outs
    try:
        ins = [_endpoint(x) for x in body.get("input_layers", [])]
        outs = [_endpoint(x) for x in body.get("output_layers", [])]
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{path}: cannot parse the model's inputs and outputs: {err}") from err
    return class_name, layers, ins, outs


def _endpoint(entry: Any) -> str:
    if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
        raise TypeError(f"input/output entry {str(entry)[:60]} is not [layer name, ...]")
    return entry[0]


def _sequential_layer(raw: dict[str, Any], layers: list[KerasLayer], prev: str | None) -> str:
    conf = dict(_dict(raw.get("config", {}), "config"))
    name = str(conf.get("name") or raw.get("name"))
    cls = raw.get("class_name")
    if not isinstance(cls, str):
        raise TypeError("class_name is missing or not a string")
    if cls == "InputLayer":
        layers.append(KerasLayer(name, "InputLayer", conf, ()))
        return name
    if prev is None:
        shape = conf.get("batch_input_shape") or conf.get("batch_shape")
        inp = KerasLayer(f"{name}_input", "InputLayer", {"batch_input_shape": shape}, ())
        layers.append(inp)
        prev = inp.name
    layers.append(KerasLayer(name, cls, conf, (prev,)))
    return name


def _functional_layer(raw: dict[str, Any]) -> KerasLayer:
    conf = dict(_dict(raw.get("config", {}), "config"))
    cls = raw.get("class_name")
    if not isinstance(cls, str):
        raise TypeError("class_name is missing or not a string")
    return KerasLayer(
        name=str(raw.get("name") or conf["name"]),
        class_name=cls,
        config=conf,
        inbound=_inbound_names(raw.get("inbound_nodes")),
    )


def _check_signature(path: Path, label: Path) -> None:
    """Refuse a file that is not HDF5 from its first bytes, before h5py parses anything."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except OSError as err:
        raise WeightsError(f"{label}: cannot read the weights file: {err.strerror}") from err
    if head != HDF5_SIGNATURE:
        why = "empty" if not head else "no HDF5 signature in its first bytes"
        raise WeightsError(f"{label}: not an HDF5 file ({why})")


def _check_dataset(label: Path, name: str, ds: h5py.Dataset) -> None:
    """Refuse storage that reads outside the file or runs a plugin (any dataset)."""
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        raise WeightsError(
            f"{label}: dataset {name!r}: virtual dataset (its data would come from other "
            "files); refused"
        )
    if dcpl.get_external_count() > 0:
        outside = _text(dcpl.get_external(0)[0])[:200]
        raise WeightsError(
            f"{label}: dataset {name!r}: stored in an outside file ({outside!r}), which the "
            "file's sha256 does not cover; refused"
        )
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _BUILTIN_FILTERS:
            raise WeightsError(
                f"{label}: dataset {name!r}: compression filter {code} needs a plugin; refused"
            )


def _check_tree(label: Path, fh: h5py.File) -> None:
    """Walk every link of the file: hard links only, and every dataset's storage checked."""
    links: list[tuple[str, Any]] = []

    def collect(name: str, link: Any) -> bool | None:
        # No exception may leave an h5py visitor: collect, stop early, check after.
        links.append((name, link))
        return True if len(links) > MAX_LINKS else None

    fh.visititems_links(collect)
    if len(links) > MAX_LINKS:
        raise WeightsError(f"{label}: more than {MAX_LINKS} objects: not a Keras model file")
    for name, link in links:
        if isinstance(link, h5py.ExternalLink):
            raise WeightsError(
                f"{label}: {name!r} is an external link (to {link.filename[:200]!r}); refused"
            )
        if not isinstance(link, h5py.HardLink):
            raise WeightsError(f"{label}: {name!r} is a soft or user-defined link; refused")
    for name, _ in links:
        obj = fh[name]
        if isinstance(obj, h5py.Dataset):
            _check_dataset(label, name, obj)


def _attr(label: Path, obj: h5py.Group, key: str, max_items: int = 1) -> Any:
    """An attribute's value, refused unread when it holds more than ``max_items`` values
    or more than MAX_CONFIG_BYTES (attributes are names and JSON in a Keras file)."""
    if key not in obj.attrs:
        return None
    aid = obj.attrs.get_id(key)
    items = int(np.prod(aid.shape, dtype=object)) if aid.shape else 1
    try:
        stored = aid.get_storage_size()
    except RuntimeError:  # HDF5 reports an empty attribute's 0 bytes as an error
        stored = 0
    size = max(stored, items * aid.dtype.itemsize)
    where = f"{obj.name.strip('/')}@{key}"
    if items > max_items or size > MAX_CONFIG_BYTES:
        raise WeightsError(
            f"{label}: attribute {where!r} is larger than a Keras file holds "
            f"({items} values, {size} bytes); refused"
        )
    return obj.attrs[key]


def _names(label: Path, obj: h5py.Group, key: str) -> list[str]:
    raw = _attr(label, obj, key, MAX_NAMES)
    if raw is None:
        return []
    values = raw.tolist() if isinstance(raw, np.ndarray) else [raw]
    if not isinstance(values, list):
        values = [values]
    return [_text(v) for v in values]


def _dataset_names(group: h5py.Group) -> list[str]:
    found: list[str] = []
    group.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return found


def _weight_datasets(label: Path, root: h5py.Group) -> dict[str, dict[str, h5py.Dataset]]:
    """``{layer: {short weight name: dataset}}``, nothing read yet."""
    layer_names = _names(label, root, "layer_names")
    if not layer_names:  # some writers omit the attribute: take the groups in file order
        layer_names = [k for k in root if isinstance(root[k], h5py.Group)]
    out: dict[str, dict[str, h5py.Dataset]] = {}
    for layer in layer_names:
        if layer not in root or not isinstance(root[layer], h5py.Group):
            raise WeightsError(f"{label}: layer {layer!r}: listed in layer_names but has no group")
        group = root[layer]
        names = _names(label, group, "weight_names")
        if not names:  # the attribute may be missing: walk the datasets
            names = _dataset_names(group)
        found: dict[str, h5py.Dataset] = {}
        for wname in names:
            if wname not in group or not isinstance(group[wname], h5py.Dataset):
                raise WeightsError(f"{label}: layer {layer!r}: weight {wname!r} listed but absent")
            short = wname.rsplit("/", 1)[-1].split(":", 1)[0]
            if short in found:
                raise WeightsError(f"{label}: layer {layer!r}: weight {short!r} appears twice")
            found[short] = group[wname]
        if found:
            out[layer] = found
    return out


def _check_declared(
    label: Path, datasets: dict[str, dict[str, h5py.Dataset]], max_params: int
) -> None:
    """Refuse non-float weights, crawling chunk layouts, and declared sizes over the cap,
    from the datasets' metadata alone."""
    total = 0
    largest: tuple[int, str] = (0, "")
    for arrays in datasets.values():
        for ds in arrays.values():
            if ds.dtype.kind != "f" or ds.dtype.itemsize not in (2, 4, 8):
                raise WeightsError(
                    f"{label}: dataset {str(ds.name).lstrip('/')!r}: dtype {ds.dtype}, expected "
                    "floating-point weights"
                )
            size = int(np.prod(ds.shape, dtype=object)) if ds.shape else 1
            if ds.chunks:
                chunks = np.prod(
                    [-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True)], dtype=object
                )
                if chunks > MAX_CHUNKS:
                    raise WeightsError(
                        f"{label}: dataset {str(ds.name).lstrip('/')!r}: {chunks} chunks of "
                        f"{ds.chunks} "
                        f"(at most {MAX_CHUNKS}); refused"
                    )
            total += size
            largest = max(largest, (size, str(ds.name).lstrip("/")))
    if total > max_params:
        size, name = largest
        raise WeightsError(
            f"{label}: dataset {name!r} declares {size:,} values and the file's weights "
            f"{total:,} in all, more than the network's {max_params:,}; refused before "
            "reading them"
        )


def read_keras_h5(
    path: Path, *, max_params: int = DEFAULT_MAX_PARAMS, label: Path | None = None
) -> KerasFile:
    """Parse a Keras 2.x HDF5 model (or weights) file.

    Args:
        path: the ``.h5`` / ``.hdf5`` file.
        max_params: weight values the file may declare in all (the network's parameter
            count, or a ceiling for it): checked before anything is read.
        label: the name errors show for the file (default ``path``; the store passes
            the user's file while it reads its own temporary copy).

    Returns:
        The architecture (when the file has one) and all weight tensors.

    Raises:
        WeightsError: the file is missing, not HDF5, unsafe (see the module docstring)
            or its structure is not Keras'; the message names the file and the part.
    """
    path = Path(path)
    shown = Path(label) if label is not None else path
    if not path.is_file():
        raise WeightsError(f"{shown}: weights file not found")
    _check_signature(path, shown)
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise WeightsError(f"{shown}: not an HDF5 file ({err})") from err
    with fh:
        try:
            _check_tree(shown, fh)
            keras_version = _text(_attr(shown, fh, "keras_version") or "")
            backend = _text(_attr(shown, fh, "backend") or "")
            model_class = ""
            layers: list[KerasLayer] = []
            ins: list[str] = []
            outs: list[str] = []
            raw_config = _attr(shown, fh, "model_config")
            if raw_config is not None:
                try:
                    cfg = json.loads(_text(raw_config))
                except (ValueError, RecursionError) as err:
                    why = "nested too deeply" if isinstance(err, RecursionError) else str(err)
                    raise WeightsError(
                        f"{shown}: cannot parse the architecture JSON (model_config): {why[:200]}"
                    ) from err
                model_class, layers, ins, outs = _parse_architecture(shown, cfg)
            root = fh.get("model_weights", fh)
            if not isinstance(root, h5py.Group):
                raise WeightsError(f"{shown}: 'model_weights' is not a group")
            if "model_weights" in fh:
                version = _attr(shown, root, "keras_version")
                keras_version = keras_version or _text(version or "")
            datasets = _weight_datasets(shown, root)
            _check_declared(shown, datasets, max_params)
            tensors = {
                layer: {w: np.asarray(ds[()], dtype=np.float32) for w, ds in arrays.items()}
                for layer, arrays in datasets.items()
            }
        except (KeyError, OSError, TypeError, ValueError) as err:
            raise WeightsError(f"{shown}: not a Keras HDF5 model file ({err})") from err
    if not tensors:
        raise WeightsError(f"{shown}: no weight tensors found (not a Keras model file?)")
    kf = KerasFile(
        path=shown,
        keras_version=keras_version,
        backend=backend,
        model_class=model_class,
        layers=layers,
        input_layers=ins,
        output_layers=outs,
        weights=WeightBook(shown, tensors),
    )
    logger.debug(
        "read %s: keras %s, %d layers, %d weight tensors, %d parameters",
        shown,
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
