"""The affect stage: face crops -> valence/arousal.

model = load_va_model(cfg.affect, default_store())
async with AffectEngine.from_config(model, cfg.affect) as engine:
    va = await engine.infer(crops)   # (N, 64, 64) uint8 -> (N, 2) [valence, arousal]
"""

from __future__ import annotations

from streamer.affect.engine import AffectEngine, EngineStats
from streamer.affect.models import (
    FACECHANNEL_NAME,
    FER_VA_NAME,
    FaceChannelModel,
    FerVAModel,
    VAModel,
    load_va_model,
)

__all__ = [
    "FACECHANNEL_NAME",
    "FER_VA_NAME",
    "AffectEngine",
    "EngineStats",
    "FaceChannelModel",
    "FerVAModel",
    "VAModel",
    "load_va_model",
]
