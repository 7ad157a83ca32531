"""PyTorch runtime (optional extra ``torch``): CPU or CUDA, optionally float16."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field

from streamer.affect.runtimes import ModelSource, RuntimeConfigBase, RuntimePlugin, require
from streamer.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = ["PLUGIN", "TorchRuntime", "TorchRuntimeConfig", "create"]


class TorchRuntimeConfig(RuntimeConfigBase):
    """PyTorch (needs the `torch` extra)."""

    type: Literal["torch"] = "torch"
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA when torch sees a GPU, else CPU"
    )
    half: bool = Field(False, description="run in float16 (CUDA only)")
    threads: int = Field(1, ge=1, le=256, description="CPU threads (torch.set_num_threads)")


class TorchRuntime:
    """Runs a torch module built from the imported graph."""

    def __init__(self, module: Any, cfg: TorchRuntimeConfig) -> None:
        import torch

        self._torch = torch
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ModelError("affect.runtime.device is cuda but torch sees no CUDA device")
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if use_cuda else "cpu")
        if not use_cuda:
            torch.set_num_threads(cfg.threads)
        self.dtype = torch.float16 if (cfg.half and use_cuda) else torch.float32
        self.module = module.to(self.device, self.dtype).eval()
        self.name = f"torch-{self.device.type}" + ("-fp16" if self.dtype == torch.float16 else "")

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)
            outs = self.module(t)
            return [o.float().cpu().numpy() for o in outs]

    def close(self) -> None:
        self.module = None


def torch_module(source: ModelSource) -> Any:
    """The torch network for ``source`` (FaceChannel written out; others interpreted)."""
    require("torch", "torch")
    from streamer.affect.torch_models import FaceChannelV1, GraphModule

    if source.network == "facechannel":
        return FaceChannelV1.from_graph(source.graph)
    return GraphModule(source.graph)


def create(cfg: TorchRuntimeConfig, source: ModelSource) -> TorchRuntime:
    return TorchRuntime(torch_module(source), cfg)


PLUGIN = RuntimePlugin("torch", TorchRuntimeConfig, create)
