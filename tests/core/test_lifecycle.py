"""Single-use context managers say so when entered again."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.affect.engine import AffectEngine
from streamer.bus import EventBus
from streamer.describe import Describer
from streamer.describe.providers import Provider
from streamer.describe.providers.ollama import OllamaConfig, OllamaProvider


class _Zeros:
    name = "zeros"
    approximate = False
    input_size = 64

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.zeros((len(crops), 2), np.float32)


async def test_engine_refuses_a_second_entry() -> None:
    engine = AffectEngine(_Zeros())
    async with engine:
        va = await engine.infer(np.zeros((1, 64, 64), np.uint8))
        assert va.shape == (1, 2)
    with pytest.raises(RuntimeError, match="AffectEngine cannot be entered twice"):
        async with engine:
            pass


async def test_describer_refuses_a_second_entry(refused_url: str) -> None:
    cfg = OllamaConfig(host=refused_url)
    provider: Provider = OllamaProvider(cfg)
    describer = Describer(cfg, EventBus(), provider)
    async with describer:
        assert await describer.drain(1.0)
    with pytest.raises(RuntimeError, match="Describer cannot be entered twice"):
        async with describer:
            pass
