"""Inference runtimes behind one interface, chosen by ``affect.runtime.type``.

A runtime runs one network (a :class:`~streamer.affect.graph.Graph`) on a batch::

    rt = make_runtime(cfg.runtime, source)
    arousal, valence = rt.run(x)    # x: (N, C, H, W) float32; outputs in graph order

Registered types: ``onnx`` (onnxruntime, default), ``tensorrt`` (optional extra),
``torch`` (optional extra), ``ray-serve`` (a shared Ray Serve deployment; the
``cluster`` extra). The ONNX model is built from the graph without torch and
cached under the store's derived folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from streamer.affect.config import (
    OnnxRuntimeConfig,
    RayServeRuntimeConfig,
    TensorRtRuntimeConfig,
    TorchRuntimeConfig,
)
from streamer.affect.graph import Graph
from streamer.errors import ModelError

__all__ = ["ModelSource", "Runtime", "make_runtime"]


class Runtime(Protocol):
    """Runs a network on a batch. Calls come from one thread at a time."""

    name: str  # e.g. "onnxruntime-cpu", goes into logs and benchmarks

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on ``x`` (N, C, H, W) float32; returns the outputs in graph order."""
        ...

    def close(self) -> None:
        """Release the runtime's resources."""
        ...


@dataclass
class ModelSource:
    """What a runtime needs to load a network.

    Attributes:
        network: ``"fer"`` or ``"facechannel"``: cache key and torch architecture.
        graph: the imported network.
        sha256: sha256 of the weights file (cache key of derived files).
        derived_dir: folder for derived files (ONNX models, TensorRT engines).
    """

    network: str
    graph: Graph
    sha256: str
    derived_dir: Path


_MODULES: dict[type, str] = {
    OnnxRuntimeConfig: "streamer.affect.runtimes.onnxrt",
    TensorRtRuntimeConfig: "streamer.affect.runtimes.tensorrt_rt",
    TorchRuntimeConfig: "streamer.affect.runtimes.torch_rt",
    RayServeRuntimeConfig: "streamer.affect.runtimes.ray_serve",
}


def make_runtime(
    cfg: OnnxRuntimeConfig | TensorRtRuntimeConfig | TorchRuntimeConfig | RayServeRuntimeConfig,
    source: ModelSource,
) -> Runtime:
    """Create the runtime ``cfg`` selects for ``source``.

    Raises:
        ModelError: the runtime's optional package is not installed, or it cannot load.
    """
    module = importlib.import_module(_MODULES[type(cfg)])
    factory: Callable[..., Runtime] = module.create
    return factory(cfg, source)


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise a :class:`ModelError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModelError(
            f"runtime needs the optional package {module!r}: pip install 'streamer[{extra}]'"
        ) from err
