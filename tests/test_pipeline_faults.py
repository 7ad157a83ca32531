"""Pipeline under model faults: NaN, wrong shape, exceptions.

The faults are injected by wrapping the real default model: a real network does not
produce them on demand.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

import streamer.affect
from streamer.config import AppConfig
from streamer.messages import VASample
from streamer.pipeline import Pipeline
from streamer.sources.file import FileSource
from streamer.store import default_store


class Faulty:
    """Wraps a VA model; every ``every``-th call misbehaves in the given way."""

    def __init__(self, inner: object, mode: str, every: int = 3) -> None:
        self.inner = inner
        self.mode = mode
        self.every = every
        self.calls = 0
        self.name = inner.name  # type: ignore[attr-defined]
        self.approximate = inner.approximate  # type: ignore[attr-defined]
        self.input_size = inner.input_size  # type: ignore[attr-defined]

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = self.inner.predict(crops)  # type: ignore[attr-defined]
        if self.calls % self.every:
            return out
        if self.mode == "nan":
            out = out.copy()
            out[:, 0] = np.nan
            return out
        if self.mode == "inf":
            return np.full_like(out, np.inf)
        if self.mode == "shape":
            return np.zeros((len(crops) + 1, 3), np.float32)
        raise RuntimeError("injected model failure")


async def _run(video: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list, object]:
    real = streamer.affect.load_va_model
    wrapped: list[Faulty] = []

    def load(cfg: object, store: object) -> Faulty:
        wrapped.append(Faulty(real(cfg, store), mode))
        return wrapped[0]

    monkeypatch.setattr(streamer.affect, "load_va_model", load)
    pipe = Pipeline(AppConfig(), default_store())
    sub = pipe.bus.subscribe("test", maxsize=100_000, lossless=True)
    got: list = []

    async def collect() -> None:
        async for m in sub:
            got.append(m)

    async with FileSource(video) as src, pipe:
        task = asyncio.create_task(collect())
        stats = await pipe.run_camera(src.camera, src, lossless=True)
    await task
    assert wrapped[0].calls > 0
    return got, stats


@pytest.mark.parametrize("mode", ["nan", "inf", "shape", "raise"])
async def test_bad_model_output_is_discarded_counted_and_never_published(
    mode: str, store_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = store_path("single_face.mp4")
    store_path("yunet"), store_path("fer")
    msgs, stats = await _run(video, mode, monkeypatch)
    va = [m for m in msgs if isinstance(m, VASample)]
    assert len(va) == stats.faces > 0, "every visible face still gets a record"
    rejected = [m for m in va if m.valence_raw is None]
    assert len(rejected) == stats.va_rejected > 0
    for m in va:
        assert math.isfinite(m.valence) and math.isfinite(m.arousal)
        assert -1.0 <= m.valence <= 1.0 and -1.0 <= m.arousal <= 1.0
    # A rejected step is predict-only: the variance grows instead of shrinking.
    for prev, cur in itertools.pairwise(va):
        if cur.valence_raw is None and prev.track_id == cur.track_id:
            assert cur.variance[0] > prev.variance[0]
