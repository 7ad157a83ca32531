"""Inference runtimes behind one interface, chosen by ``affect.runtime.type``.

A runtime runs one network (a :class:`~streamer.affect.graph.Graph`) on a batch::

    rt = make_runtime(cfg.runtime, source)
    arousal, valence = rt.run(x)    # x: (N, C, H, W) float32; outputs in graph order

Built-in types: ``onnx`` (onnxruntime, default), ``tensorrt`` (optional extra),
``torch`` (optional extra), ``ray-serve`` (a shared Ray Serve deployment; the
``cluster`` extra). The ONNX model is built from the graph without torch and
cached under the store's derived folder.

Adding a runtime is one new module in this package that declares, in one place, its
type key, its pydantic config and its factory::

    class MyRuntimeConfig(RuntimeConfigBase):
        type: Literal["mine"] = "mine"
        ...                                   # fields with descriptions

    def create(cfg: MyRuntimeConfig, source: ModelSource) -> Runtime: ...

    PLUGIN = RuntimePlugin("mine", MyRuntimeConfig, create)

Every module of the package with a ``PLUGIN`` is found at start-up; the config's
``affect.runtime`` union is built from them, so ``type: mine`` works in YAML at once.
Modules are imported to build the config, so they import heavy packages (the
runtime's library) inside their functions, never at module level.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, Union

import numpy as np
from pydantic import Field

from streamer.affect.graph import Graph
from streamer.config_base import StrictModel
from streamer.errors import ModelError
from streamer.plugins import check_key_default, discover

__all__ = [
    "ModelSource",
    "Runtime",
    "RuntimeConfigBase",
    "RuntimePlugin",
    "make_runtime",
    "runtime_config_union",
    "runtime_plugins",
]


class Runtime(Protocol):
    """Runs a network on a batch. Calls come from one thread at a time."""

    name: str  # e.g. "onnxruntime-cpu", goes into logs and benchmarks

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on ``x`` (N, C, H, W) float32; returns the outputs in graph order."""
        ...

    def close(self) -> None:
        """Release the runtime's resources."""
        ...


class ModelSource:
    """What a runtime needs to load a network.

    Attributes:
        network: ``"fer"`` or ``"facechannel"``: cache key and torch architecture.
        sha256: sha256 of the weights file (cache key of derived files).
        derived_dir: folder for derived files (ONNX models, TensorRT engines).

    ``graph`` (the imported network) may be given as a function that builds it: it is
    then built on first use only, so a runtime that finds its model in the cache never
    reads the weights file.
    """

    def __init__(
        self,
        network: str,
        graph: Graph | Callable[[], Graph],
        sha256: str,
        derived_dir: Path,
    ) -> None:
        self.network = network
        self.sha256 = sha256
        self.derived_dir = derived_dir
        self._graph: Graph | None = graph if isinstance(graph, Graph) else None
        self._build: Callable[[], Graph] | None = None if isinstance(graph, Graph) else graph

    @property
    def graph(self) -> Graph:
        """The network (built now if it was deferred)."""
        if self._graph is None:
            assert self._build is not None
            self._graph = self._build()
        return self._graph

    @property
    def graph_loaded(self) -> bool:
        """Whether the weights file has been read (False after a pure cache hit)."""
        return self._graph is not None


class RuntimeConfigBase(StrictModel):
    """Base of every runtime's config: ``type`` is the key its plugin registers."""

    type: str


@dataclass(frozen=True)
class RuntimePlugin:
    """One runtime: its ``type`` key, its config class and its factory.

    Raises:
        ValueError: the config's ``type`` default is not ``key``.
    """

    key: str
    config: type[RuntimeConfigBase]
    create: Callable[[Any, ModelSource], Runtime]

    def __post_init__(self) -> None:
        check_key_default(self.key, self.config, "type")


@functools.cache
def runtime_plugins() -> dict[str, RuntimePlugin]:
    """Every runtime plugin of this package, by key (modules found and imported once)."""
    return discover(__name__, __path__, RuntimePlugin)


def runtime_config_union() -> Any:
    """The ``affect.runtime`` config type: a union of every plugin's config on ``type``."""
    configs = tuple(p.config for p in runtime_plugins().values())
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007


def make_runtime(cfg: RuntimeConfigBase, source: ModelSource) -> Runtime:
    """Create the runtime ``cfg`` selects for ``source``.

    Raises:
        ModelError: no runtime has that type, its optional package is not installed,
            or it cannot load.
    """
    plugin = runtime_plugins().get(cfg.type)
    if plugin is None:
        known = ", ".join(runtime_plugins())
        raise ModelError(f"affect.runtime.type: unknown runtime {cfg.type!r}; known: {known}")
    return plugin.create(cfg, source)


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise a :class:`ModelError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModelError(
            f"runtime needs the optional package {module!r}: pip install 'streamer[{extra}]'"
        ) from err
