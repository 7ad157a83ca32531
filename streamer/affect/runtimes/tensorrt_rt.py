"""TensorRT runtime (optional extra ``tensorrt``): an FP16 engine built from the ONNX model.

Written against the official TensorRT 10 Python API (``tensorrt``) and cuda-python's
runtime bindings for device memory. The engine is built once from the same ONNX model
the onnxruntime backend uses, with an optimization profile for batch 1..``max_batch``,
and cached beside the ONNX model keyed by GPU name and TensorRT version (an engine is
only valid for the GPU model and TensorRT release that built it).

Not exercised on the CPU-only development machines: its tests skip with the reason
"tensorrt not installed" there.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from streamer.affect.runtimes import ModelSource, RuntimeConfigBase, RuntimePlugin, require
from streamer.affect.runtimes.onnxrt import onnx_path
from streamer.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = ["PLUGIN", "TensorRtRuntime", "TensorRtRuntimeConfig", "create", "engine_path"]


class TensorRtRuntimeConfig(RuntimeConfigBase):
    """TensorRT engine built from the same ONNX (needs the `tensorrt` extra and a GPU)."""

    type: Literal["tensorrt"] = "tensorrt"
    fp16: bool = Field(True, description="build the engine with FP16 kernels allowed")
    max_batch: int = Field(
        32, ge=1, le=1024, description="largest batch of the engine's optimization profile"
    )
    workspace_mib: int = Field(
        1024, ge=16, le=65536, description="builder workspace memory limit, MiB"
    )


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as err:
            raise ModelError(
                "the tensorrt runtime needs cuda-python: pip install 'streamer[tensorrt]'"
            ) from err
    return cudart


def _check(result: Any) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ModelError(f"CUDA runtime error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def engine_path(
    onnx_file: Path, gpu_name: str, trt_version: str, cfg: TensorRtRuntimeConfig
) -> Path:
    """Cache path of the engine for ``onnx_file`` on this GPU model and TensorRT."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", gpu_name).strip("_") or "gpu"
    prec = "fp16" if cfg.fp16 else "fp32"
    return onnx_file.with_name(
        f"{onnx_file.stem}.{gpu}.trt{trt_version}.{prec}.b{cfg.max_batch}.engine"
    )


class TensorRtRuntime:
    """Runs a deserialized TensorRT engine on one CUDA stream."""

    def __init__(self, source: ModelSource, cfg: TensorRtRuntimeConfig) -> None:
        from streamer.affect.onnx_export import INPUT_NAME

        trt: Any = require("tensorrt", "tensorrt")
        self._input_name = INPUT_NAME
        self._trt = trt
        self._cudart = cudart = _cudart()
        self.cfg = cfg
        props = _check(cudart.cudaGetDeviceProperties(0))
        gpu_name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        onnx_file = onnx_path(source)
        path = engine_path(onnx_file, gpu_name, trt.__version__, cfg)
        self._logger = trt.Logger(trt.Logger.WARNING)
        if not path.is_file():
            self._build(onnx_file, path, source)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ModelError(
                f"{path}: TensorRT cannot deserialize the engine (delete it to rebuild)"
            )
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate())
        self._inputs_shape = tuple(source.graph.input.shape)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._outputs = [
            n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT
        ]
        self._out_shapes = {
            name: source.graph.node(src).shape for src, name in source.graph.outputs
        }
        # Device buffers sized for the largest batch, allocated once.
        self._buffers: dict[str, int] = {}
        per_sample = {INPUT_NAME: int(np.prod(self._inputs_shape))}
        per_sample.update({n: int(np.prod(self._out_shapes[n])) for n in self._outputs})
        for name, count in per_sample.items():
            self._buffers[name] = _check(cudart.cudaMalloc(cfg.max_batch * count * 4))
        self.name = "tensorrt-" + ("fp16" if cfg.fp16 else "fp32")
        logger.info("TensorRT engine %s on %s", path.name, gpu_name)

    def _build(self, onnx_file: Path, path: Path, source: ModelSource) -> None:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_file.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelError(f"{onnx_file}: TensorRT cannot parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.cfg.workspace_mib << 20)
        if self.cfg.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        chw = tuple(source.graph.input.shape)
        profile = builder.create_optimization_profile()
        opt = min(8, self.cfg.max_batch)
        profile.set_shape(self._input_name, (1, *chw), (opt, *chw), (self.cfg.max_batch, *chw))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelError(f"{onnx_file}: TensorRT engine build failed (see log)")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(bytes(serialized))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("built TensorRT engine %s", path)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        cudart = self._cudart
        n = x.shape[0]
        outs: list[list[np.ndarray]] = []
        for start in range(0, n, self.cfg.max_batch):
            chunk = np.ascontiguousarray(x[start : start + self.cfg.max_batch], np.float32)
            b = chunk.shape[0]
            self._context.set_input_shape(self._input_name, chunk.shape)
            h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(
                cudart.cudaMemcpyAsync(
                    self._buffers[self._input_name],
                    chunk.ctypes.data,
                    chunk.nbytes,
                    h2d,
                    self._stream,
                )
            )
            for name, ptr in self._buffers.items():
                self._context.set_tensor_address(name, ptr)
            if not self._context.execute_async_v3(self._stream):
                raise ModelError("TensorRT execution failed")
            host: list[np.ndarray] = []
            d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            for name in self._outputs:
                arr = np.empty((b, *self._out_shapes[name]), np.float32)
                _check(
                    cudart.cudaMemcpyAsync(
                        arr.ctypes.data, self._buffers[name], arr.nbytes, d2h, self._stream
                    )
                )
                host.append(arr)
            _check(cudart.cudaStreamSynchronize(self._stream))
            outs.append(host)
        by_name = {
            name: np.concatenate([o[i] for o in outs]) for i, name in enumerate(self._outputs)
        }
        return [by_name[name] for name in self._out_shapes]  # graph output order

    def close(self) -> None:
        for ptr in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None


def create(cfg: TensorRtRuntimeConfig, source: ModelSource) -> TensorRtRuntime:
    return TensorRtRuntime(source, cfg)


PLUGIN = RuntimePlugin("tensorrt", TensorRtRuntimeConfig, create)
