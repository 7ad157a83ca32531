"""onnxruntime runtime: CPU by default, CUDA provider when present."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from pydantic import Field

from streamer.affect.runtimes import ModelSource, RuntimeConfigBase, RuntimePlugin
from streamer.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "PLUGIN",
    "OnnxRuntime",
    "OnnxRuntimeConfig",
    "create",
    "onnx_path",
    "quantize_int8",
    "quantize_int8_static",
]


class OnnxRuntimeConfig(RuntimeConfigBase):
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


def onnx_path(source: ModelSource) -> Path:
    """The fp32 ONNX model of ``source`` (built and cached on first use)."""
    from streamer.affect.onnx_export import BUILDER_VERSION, build_onnx
    from streamer.store.derived import cached_onnx

    return cached_onnx(
        source.derived_dir,
        source.network,
        source.sha256,
        lambda: build_onnx(source.graph),
        builder_version=BUILDER_VERSION,
    )


def _pre_processed(fp32: Path) -> Path:
    """The fp32 model after onnxruntime's quantization pre-processing (shape inference,
    graph optimisation), cached beside it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = fp32.with_name(fp32.name.replace("-fp32.onnx", "-fp32pre.onnx"))
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            quant_pre_process(str(fp32), str(tmp))
            tmp.replace(out)
        except ImportError as err:  # its symbolic shape inference needs sympy
            raise ModelError(
                f"int8 quantization needs onnxruntime's shape inference, which needs "
                f"sympy: pip install 'streamer[quantize]' ({err})"
            ) from err
        finally:
            tmp.unlink(missing_ok=True)
    return out


def quantize_int8(source: ModelSource) -> Path:
    """A dynamically int8-quantized copy of the fp32 model (weights int8, activations
    quantized at run time; cached beside it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = onnx_path(source)
    out = fp32.with_name(fp32.name.replace("-fp32.onnx", "-int8.onnx"))
    if out.is_file():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        quantize_dynamic(str(_pre_processed(fp32)), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def quantize_int8_static(source: ModelSource, calibration: np.ndarray, out: Path) -> Path:
    """Static int8 (QDQ) quantization calibrated on ``calibration`` inputs.

    Args:
        source: the network.
        calibration: (N, C, H, W) float32 network inputs (normalised real face crops).
        out: where to write the quantized model.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from streamer.affect.onnx_export import INPUT_NAME

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(
                [{INPUT_NAME: calibration[i : i + 8]} for i in range(0, len(calibration), 8)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quantize_static(
        str(_pre_processed(onnx_path(source))),
        str(out),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def _optimized_path(path: Path) -> Path:
    """Where onnxruntime's optimised copy of ``path`` is kept (per onnxruntime version:
    a saved optimised graph is only valid for the version and machine that wrote it)."""
    return path.with_name(f"{path.stem}.ort{ort.__version__}-cpu.opt")


def _session(path: Path, opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{path}: onnxruntime cannot load the model: {err}") from err


def _cpu_session(path: Path, opts: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session, from the saved optimised graph when there is one.

    The first run optimises ``path`` and saves the result beside it
    (``SessionOptions.optimized_model_filepath``); later runs load that file with the
    optimisations already applied. A saved file onnxruntime cannot load is removed with
    a warning and made again.
    """
    providers = ["CPUExecutionProvider"]
    saved = _optimized_path(path)
    if saved.is_file():
        fast = ort.SessionOptions()
        fast.intra_op_num_threads = opts.intra_op_num_threads
        fast.inter_op_num_threads = opts.inter_op_num_threads
        fast.execution_mode = opts.execution_mode
        fast.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(saved), fast, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped errors
            logger.warning(
                "saved optimised model %s cannot be loaded (%s); remaking it", saved, err
            )
            saved.unlink(missing_ok=True)
    # Saved at the extended level: the layout transforms of the full level are
    # hardware-specific, and are redone (cheaply) when the saved file is loaded.
    tmp = saved.with_name(f".{saved.name}.{os.getpid()}.tmp")
    level = opts.graph_optimization_level
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp)
    try:
        _session(path, opts, providers)
        if tmp.is_file():
            tmp.replace(saved)
    except (ModelError, OSError) as err:
        logger.debug("could not save the optimised model %s: %s", saved, err)
    finally:
        tmp.unlink(missing_ok=True)
        opts.optimized_model_filepath = ""
        opts.graph_optimization_level = level
    return _session(path, opts, providers)


class OnnxRuntime:
    """An onnxruntime session; graph optimisation on, threads as configured."""

    def __init__(self, path: Path, cfg: OnnxRuntimeConfig) -> None:
        from streamer.affect.onnx_export import INPUT_NAME

        self._input_name = INPUT_NAME
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cfg.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if cfg.device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif cfg.device == "cuda":
            raise ModelError(
                "affect.runtime.device is cuda but onnxruntime has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu"
            )
        if providers == ["CPUExecutionProvider"]:
            self._session = _cpu_session(path, opts)
        else:
            self._session = _session(path, opts, providers)
        used = self._session.get_providers()[0]
        self.name = "onnxruntime-" + ("cuda" if used.startswith("CUDA") else "cpu")
        if cfg.quantize == "int8":
            self.name += "-int8"
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self._session.run(self._outputs, {self._input_name: x}))

    def close(self) -> None:
        self._session = None


def create(cfg: OnnxRuntimeConfig, source: ModelSource) -> OnnxRuntime:
    path = quantize_int8(source) if cfg.quantize == "int8" else onnx_path(source)
    return OnnxRuntime(path, cfg)


PLUGIN = RuntimePlugin("onnx", OnnxRuntimeConfig, create)
