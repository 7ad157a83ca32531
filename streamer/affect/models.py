"""VA models: the interface, the two networks, and the selection at start-up.

    model = load_va_model(cfg.affect, default_store())
    va = model.predict(crops)        # (N, 64, 64) uint8 -> (N, 2) [valence, arousal]

``auto`` selects FaceChannel when its weights are in the store, otherwise the embedded
default (the fer mini-Xception, its 7 class probabilities projected onto valence and
arousal: approximate, and named so in every output).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from streamer.affect.config import AffectConfig
from streamer.affect.graph import Graph
from streamer.affect.projection import FER_CLASSES, project_va
from streamer.affect.runtimes import ModelSource, Runtime, make_runtime
from streamer.errors import ModelError, WeightsError
from streamer.store import ArtifactStore
from streamer.store.fetch import sha256_file

if TYPE_CHECKING:
    from streamer.affect.keras_h5 import KerasFile

logger = logging.getLogger(__name__)

__all__ = [
    "FACECHANNEL_NAME",
    "FER_VA_NAME",
    "FaceChannelModel",
    "FerVAModel",
    "VAModel",
    "build_source",
    "load_va_model",
]

FER_VA_NAME = "fer-minixception-va~approx"
FACECHANNEL_NAME = "facechannel-v1"
INPUT_SIZE = 64  # crop side, pixels


@runtime_checkable
class VAModel(Protocol):
    """A valence/arousal network on 64x64 grayscale face crops."""

    name: str  # goes into every output's `model` field
    approximate: bool
    input_size: int

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 crops -> (N, 2) float32 [valence, arousal]; N may be 0."""
        ...


def runtime_name(model: VAModel) -> str:
    """The runtime ``model`` runs on (``onnxruntime-cpu``, ``ray-serve:APP``, ...), or ""
    for a model without one (a test's or a bench's stand-in)."""
    return model.runtime.name if isinstance(model, _GraphModel) else ""


def _check_crops(crops: np.ndarray, size: int) -> np.ndarray:
    arr = np.asarray(crops)
    if arr.ndim != 3 or arr.shape[1:] != (size, size) or arr.dtype != np.uint8:
        raise ValueError(
            f"expected crops of shape (N, {size}, {size}) uint8, got {arr.shape} {arr.dtype}"
        )
    return arr


class _GraphModel:
    """Shared part: vectorised normalisation into a preallocated buffer, then the runtime.

    Not thread-safe (one buffer): :class:`~streamer.affect.engine.AffectEngine` calls it
    from its one worker thread.
    """

    name: str
    approximate: bool
    input_size = INPUT_SIZE
    _scale: float
    _offset: float

    def __init__(
        self, runtime: Runtime, graph: Graph | ModelSource, weights: Path | None = None
    ) -> None:
        self.runtime = runtime
        self._graph = graph  # a ModelSource reads the weights only if the graph is asked for
        self.weights = weights
        self._buf = np.empty((0, 1, INPUT_SIZE, INPUT_SIZE), np.float32)

    @property
    def graph(self) -> Graph:
        g = self._graph
        return g.graph if isinstance(g, ModelSource) else g

    @property
    def param_count(self) -> int:
        return self.graph.param_count

    @classmethod
    def normalise(cls, crops: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 crops -> (N, 1, 64, 64) float32 network input (a new array)."""
        arr = _check_crops(crops, cls.input_size)
        x = arr[:, None].astype(np.float32) * np.float32(cls._scale)
        return x + np.float32(cls._offset) if cls._offset else x

    def _inputs(self, crops: np.ndarray) -> np.ndarray:
        arr = _check_crops(crops, self.input_size)
        n = arr.shape[0]
        if self._buf.shape[0] < n:
            self._buf = np.empty(
                (max(n, 2 * self._buf.shape[0]), 1, INPUT_SIZE, INPUT_SIZE), np.float32
            )
        x = self._buf[:n]
        np.multiply(arr[:, None], np.float32(self._scale), out=x, casting="unsafe")
        if self._offset:
            x += np.float32(self._offset)
        return x

    def close(self) -> None:
        self.runtime.close()


class FerVAModel(_GraphModel):
    """The embedded default: fer mini-Xception, 7 classes projected onto (valence, arousal).

    Input normalisation as in fer's training: x / 127.5 - 1.
    """

    name = FER_VA_NAME
    approximate = True
    classes = FER_CLASSES
    _scale = 1.0 / 127.5
    _offset = -1.0

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 -> (N, 7) float32 class probabilities (see ``classes``)."""
        if len(crops) == 0:
            return np.zeros((0, len(FER_CLASSES)), np.float32)
        (probs,) = self.runtime.run(self._inputs(crops))
        return np.asarray(probs, np.float32)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, 2), np.float32)
        return project_va(self.predict_proba(crops))


class FaceChannelModel(_GraphModel):
    """FaceChannel V1 (dimensional). Input gray / 255 as in the reference's preProcess."""

    name = FACECHANNEL_NAME
    approximate = False
    _scale = 1.0 / 255.0
    _offset = 0.0

    def predict(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, 2), np.float32)
        arousal, valence = self.runtime.run(self._inputs(crops))
        return np.concatenate([valence, arousal], axis=1).astype(np.float32, copy=False)


MIB = 1 << 20
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FACECHANNEL_PARAMS = 3_592_090  # FaceChannel V1 dimensional (facechannel.parameter_count())
FER_VA_MAX_PARAMS = 4_000_000  # a ceiling for classifiers imported as fer-va (fer's: 58,423)


@dataclass(frozen=True)
class _Network:
    """One importable VA network.

    Attributes:
        artifact: its store artifact.
        key: network key (cache key of derived files).
        builder: ``module:function`` turning a KerasFile into a Graph.
        wrapper: the VAModel class.
        max_params: weight values a file may declare in all (checked before any read).
        max_file_mb: default size cap of a weights file (``affect.max_weights_mb``).
        outputs: the output shapes the wrapper needs.
    """

    artifact: str
    key: str
    builder: str
    wrapper: type[FerVAModel] | type[FaceChannelModel]
    max_params: int
    max_file_mb: int
    outputs: tuple[tuple[int, ...], ...]


_NETWORKS: dict[str, _Network] = {
    "fer-va": _Network(
        "fer",
        "fer",
        "streamer.affect.keras_graph:graph_from_keras",
        FerVAModel,
        FER_VA_MAX_PARAMS,
        64,
        ((len(FER_CLASSES),),),
    ),
    "facechannel": _Network(
        "facechannel",
        "facechannel",
        "streamer.affect.facechannel:facechannel_graph",
        FaceChannelModel,
        FACECHANNEL_PARAMS,
        128,
        ((1,), (1,)),
    ),
}


def model_class(model: str) -> type[FerVAModel] | type[FaceChannelModel]:
    """The wrapper class of the network ``model`` names (``fer-va``, ``facechannel``)."""
    return _NETWORKS[model].wrapper


def max_weights_bytes(model: str, max_mb: int | None = None) -> int:
    """The size cap of a weights file for ``model`` (``max_mb``, else its default)."""
    return (max_mb or _NETWORKS[model].max_file_mb) * MIB


def check_weights_file(
    model: str, path: Path, label: Path | None = None, max_mb: int | None = None
) -> None:
    """Refuse a weights file by its size and first bytes, before it is hashed or parsed.

    Raises:
        WeightsError: missing, over the size cap, or not HDF5 (names ``label``).
    """
    shown = label or path
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except FileNotFoundError as err:
        raise WeightsError(f"{shown}: weights file not found") from err
    except OSError as err:
        raise WeightsError(f"{shown}: cannot read the weights file: {err.strerror}") from err
    cap = max_weights_bytes(model, max_mb)
    if size > cap:
        raise WeightsError(
            f"{shown}: {size / MIB:.1f} MiB, larger than the {cap // MIB} MiB cap for "
            f"{model} weights (raise it with affect.max_weights_mb or models add --max-mb)"
        )
    if head != HDF5_SIGNATURE:
        why = "empty" if not head else "no HDF5 signature in its first bytes"
        raise WeightsError(f"{shown}: not an HDF5 file ({why})")


def build_source(
    model: str,
    weights: Path,
    derived_dir: Path,
    *,
    label: Path | None = None,
    max_mb: int | None = None,
) -> tuple[ModelSource, KerasFile]:
    """Import ``weights`` for network ``model`` ("fer-va" or "facechannel").

    Both networks go through the same reader (:func:`read_keras_h5`); the file's size,
    format and declared weights are checked before anything is read, every tensor's
    shape is checked and every weight of the file must be used.

    Args:
        model: ``fer-va`` or ``facechannel``.
        weights: the Keras HDF5 file.
        derived_dir: the store's folder for derived files.
        label: the name errors show for the file (default ``weights``).
        max_mb: size cap of the file (default: the network's).

    Raises:
        WeightsError: the file does not match the network (names file and layer).
    """
    import importlib

    from streamer.affect.keras_h5 import read_keras_h5  # h5py: only when reading weights

    net = _NETWORKS[model]
    shown = label or weights
    check_weights_file(model, weights, shown, max_mb)
    module, func = net.builder.split(":")
    builder: Any = getattr(importlib.import_module(module), func)
    kf = read_keras_h5(weights, max_params=net.max_params, label=shown)
    graph = builder(kf)
    _check_io(graph, net, shown)
    if kf.weights.used_param_count != kf.weights.file_param_count:  # belt and braces
        raise WeightsError(f"{shown}: not every weight of the file was used")
    return ModelSource(net.key, graph, sha256_file(weights), derived_dir), kf


def _check_io(graph: Graph, net: _Network, shown: Path) -> None:
    """The imported network must take 64x64 grey crops and give what the wrapper reads
    (checked before any ONNX model is built or run)."""
    want_in = (1, INPUT_SIZE, INPUT_SIZE)
    if graph.input.shape != want_in:
        raise WeightsError(
            f"{shown}: layer {graph.input.name!r}: input shape {graph.input.shape}, "
            f"the network needs {want_in} (64x64 grey crops)"
        )
    shapes = tuple(graph.node(name).shape for name, _ in graph.outputs)
    if shapes != net.outputs:
        raise WeightsError(
            f"{shown}: outputs {[o for _, o in graph.outputs]} of shapes {list(shapes)}, "
            f"{net.key} needs {list(net.outputs)}"
        )


def store_artifact(model: str) -> str:
    """The store artifact holding the weights of network ``model`` ("fer-va" or
    "facechannel")."""
    return _NETWORKS[model].artifact


def choose_network(cfg: AffectConfig, store: ArtifactStore) -> tuple[str, str]:
    """The network ``cfg`` runs when it names no weights file, and why.

    ``auto`` takes FaceChannel when its weights are in the store, else the embedded
    default (``fer-va``).
    """
    if cfg.model != "auto":
        return cfg.model, f"affect.model is {cfg.model}"
    if store.has("facechannel"):
        return "facechannel", "FaceChannel weights are in the store"
    return "fer-va", (
        "FaceChannel weights are not in the store (add them with `streamer models "
        "add facechannel PATH`); running the embedded default, approximate VA"
    )


def load_va_model(cfg: AffectConfig, store: ArtifactStore) -> VAModel:
    """Load the VA model ``cfg`` selects; logs one line saying which and why.

    Args:
        cfg: the affect section.
        store: the model store (``has``, ``path``, ``derived_dir``).

    Raises:
        ModelMissingError: the needed artifact is not in the store (message has the
            fetch command).
        WeightsError: the weights do not match the network.
        ModelError: the runtime cannot be created.
    """
    choice: str = cfg.model
    if cfg.weights is not None:
        if choice == "auto":
            raise ModelError("affect.weights needs affect.model set to facechannel or fer-va")
        weights = Path(cfg.weights)
        reason = f"weights file {weights} given in the config"
    else:
        choice, reason = choose_network(cfg, store)
        weights = store.path(store_artifact(choice))
    # Size and format before the file is hashed (a 2 GB file of zeros is refused at once).
    check_weights_file(choice, weights, max_mb=cfg.max_weights_mb)
    imported: list[KerasFile] = []

    def read_weights() -> Graph:
        # Runs only when no runtime finds a valid cached model for these weights.
        source, kf = build_source(choice, weights, store.derived_dir, max_mb=cfg.max_weights_mb)
        imported.append(kf)
        return source.graph

    source = ModelSource(
        _NETWORKS[choice].key, read_weights, sha256_file(weights), store.derived_dir
    )
    runtime = make_runtime(cfg.runtime, source)
    wrapper = _NETWORKS[choice].wrapper
    model = wrapper(runtime, source, weights)
    origin = (
        f"{imported[0].weights.used_param_count} parameters from {weights.name}"
        if imported
        else f"cached model of {weights.name}"
    )
    logger.info("affect model: %s (%s) on %s: %s", model.name, origin, runtime.name, reason)
    return model
