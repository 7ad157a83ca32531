"""AffectEngine: batching across callers, and a model that fails or hangs.

Faults that cannot be caused for real (a model returning NaN, raising, hanging) are
injected by wrapping the real fer model, as STYLE.md suggests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamer.affect import AffectEngine, load_va_model
from streamer.affect.config import AffectConfig
from streamer.affect.models import FerVAModel
from streamer.errors import ModelError
from streamer.store import ModelStore
from tests.helpers.wait import wait_until


@pytest.fixture(scope="module")
def fer_model(store_path: Callable[[str], Path], store: ModelStore) -> FerVAModel:
    store_path("fer")
    model = load_va_model(AffectConfig(model="fer-va"), store)
    assert isinstance(model, FerVAModel)
    return model


class Faulty:
    """Wraps a real model; each call takes the next action of ``plan`` ("ok" after)."""

    def __init__(self, inner: FerVAModel, plan: list[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.approximate = inner.approximate
        self.input_size = inner.input_size
        self.plan = list(plan)
        self.calls: list[int] = []  # batch size of every call
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.calls.append(len(crops))
        action = self.plan.pop(0) if self.plan else "ok"
        if action == "raise":
            raise RuntimeError("injected failure")
        if action == "shape":
            return np.zeros((len(crops), 3), np.float32)
        if action in ("hang", "block"):
            self.entered.set()
            self.release.wait(timeout=60)
        out = self.inner.predict(crops)
        if action == "nan":
            out = out.copy()
            out[0, 1] = np.inf
            out[-1, 0] = np.nan
        return out


def _crops(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)


async def test_single_call_matches_the_model(
    fer_model: FerVAModel, single_face_crops: np.ndarray
) -> None:
    crops = single_face_crops[:5]
    async with AffectEngine(fer_model) as engine:
        va = await engine.infer(crops)
        empty = await engine.infer(np.zeros((0, 64, 64), np.uint8))
    np.testing.assert_array_equal(va, fer_model.predict(crops))
    assert va.shape == (5, 2) and va.dtype == np.float32
    assert np.isfinite(va).all() and (np.abs(va) <= 1).all()
    assert empty.shape == (0, 2)
    stats = engine.stats
    assert (stats.calls, stats.faces, stats.batches) == (1, 5, 1)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 64, 64), np.float32),
        np.zeros((2, 48, 48), np.uint8),
        np.zeros((64, 64), np.uint8),
    ],
    ids=["float", "48px", "2d"],
)
async def test_bad_crops_are_rejected(fer_model: FerVAModel, bad: np.ndarray) -> None:
    async with AffectEngine(fer_model) as engine:
        with pytest.raises(ValueError, match="expected crops of shape"):
            await engine.infer(bad)


async def test_infer_outside_the_context_is_an_error(fer_model: FerVAModel) -> None:
    with pytest.raises(ModelError, match="not running"):
        await AffectEngine(fer_model).infer(_crops(1, 0))


async def test_a_single_caller_never_waits_for_the_batching_deadline(
    fer_model: FerVAModel,
) -> None:
    # A 10-minute batching deadline: if the lone caller waited for it, this would hang.
    async with AffectEngine(fer_model, max_wait_ms=600_000) as engine:
        for i in range(5):
            va = await asyncio.wait_for(engine.infer(_crops(2, i)), timeout=120)
            assert va.shape == (2, 2)
    assert engine.stats.batches == 5


async def test_concurrent_callers_are_batched(fer_model: FerVAModel) -> None:
    model = Faulty(fer_model, ["block"])
    inputs = [_crops(2, seed) for seed in range(4)]
    async with AffectEngine(model, max_batch=32, max_wait_ms=0) as engine:
        first = asyncio.create_task(engine.infer(inputs[0]), name="cam0")
        await asyncio.to_thread(model.entered.wait, 60)  # worker is busy with cam0
        rest = [
            asyncio.create_task(engine.infer(x), name=f"cam{i + 1}")
            for i, x in enumerate(inputs[1:])
        ]
        await asyncio.sleep(0)  # let the three submit while the worker is blocked
        await wait_until(lambda: engine.stats.calls >= 4, 60, "the three calls queued")
        model.release.set()
        results = await asyncio.gather(first, *rest)
    assert model.calls == [2, 6]  # cam0 alone, then the three others in one batch
    for x, va in zip(inputs, results, strict=True):
        np.testing.assert_allclose(va, fer_model.predict(x), atol=1e-6)
    assert engine.stats.largest_batch == 6


async def test_active_callers_wait_for_each_other(fer_model: FerVAModel) -> None:
    model = Faulty(fer_model, [])
    rounds = 5

    async def camera(seed: int) -> None:
        for i in range(rounds):
            va = await engine.infer(_crops(2, seed * 100 + i))
            assert np.isfinite(va).all()

    async with AffectEngine(model, max_batch=32, max_wait_ms=200) as engine:
        await asyncio.wait_for(
            asyncio.gather(
                asyncio.create_task(camera(1), name="cam1"),
                asyncio.create_task(camera(2), name="cam2"),
            ),
            timeout=120,
        )
    # Both cameras' crops share batches: 10 calls in at most 6 model calls (the first
    # round may split before the second camera has been seen).
    assert sum(model.calls) == 20
    assert len(model.calls) <= rounds + 1
    assert max(model.calls) == 4


async def test_max_batch_splits_large_requests(fer_model: FerVAModel) -> None:
    model = Faulty(fer_model, [])
    crops = _crops(10, 5)
    async with AffectEngine(model, max_batch=4) as engine:
        va = await engine.infer(crops)
    assert model.calls == [4, 4, 2]
    np.testing.assert_allclose(va, fer_model.predict(crops), atol=1e-6)


@pytest.mark.parametrize(
    ("action", "bad_rows", "counter"),
    [
        ("raise", [0, 1, 2], "model_errors"),
        ("shape", [0, 1, 2], "model_errors"),
        ("nan", [0, 2], "nonfinite_faces"),
    ],
)
async def test_model_faults_give_nan_rows_and_are_counted(
    fer_model: FerVAModel, action: str, bad_rows: list[int], counter: str
) -> None:
    model = Faulty(fer_model, [action])
    crops = _crops(3, 9)
    async with AffectEngine(model) as engine:
        va = await engine.infer(crops)
        again = await engine.infer(crops)  # the next call works again
    good = [i for i in range(3) if i not in bad_rows]
    assert np.isnan(va[bad_rows]).all(axis=1).all()
    np.testing.assert_allclose(va[good], fer_model.predict(crops)[good], atol=1e-6)
    assert np.isfinite(again).all()
    stats = engine.stats
    expected = 1 if counter == "model_errors" else len(bad_rows)
    assert getattr(stats, counter) == expected
    assert stats.batches == 2


async def test_hung_inference_is_abandoned_and_the_worker_restarted(
    fer_model: FerVAModel,
) -> None:
    model = Faulty(fer_model, ["hang"])
    crops = _crops(2, 11)
    try:
        async with AffectEngine(model, timeout_s=0.5, max_restarts=3) as engine:
            va = await engine.infer(crops)
            assert np.isnan(va).all()
            again = await engine.infer(crops)  # served by the new worker
            np.testing.assert_allclose(again, fer_model.predict(crops), atol=1e-6)
            stats = engine.stats
            assert (stats.timeouts, stats.restarts, stats.failed_faces) == (1, 1, 2)
            assert not stats.degraded
    finally:
        model.release.set()


async def test_restart_storm_marks_the_stage_degraded(fer_model: FerVAModel) -> None:
    model = Faulty(fer_model, ["hang", "hang"])
    crops = _crops(1, 12)
    try:
        async with AffectEngine(
            model, timeout_s=0.3, max_restarts=1, degraded_retry_s=3600
        ) as engine:
            await engine.infer(crops)
            assert not engine.degraded
            await engine.infer(crops)
            assert engine.degraded
            calls_before = len(model.calls)
            va = await engine.infer(crops)  # answered at once, model not called
            assert np.isnan(va).all() and len(model.calls) == calls_before
            assert engine.stats.skipped_faces == 1
    finally:
        model.release.set()


async def test_degraded_stage_recovers_when_the_model_answers(fer_model: FerVAModel) -> None:
    model = Faulty(fer_model, ["hang", "hang"])
    crops = _crops(1, 13)
    try:
        async with AffectEngine(
            model, timeout_s=0.3, max_restarts=1, degraded_retry_s=0.0
        ) as engine:
            await engine.infer(crops)
            await engine.infer(crops)
            assert engine.degraded
            va = await engine.infer(crops)  # retry period over: the model answers
            assert np.isfinite(va).all()
            assert not engine.degraded
    finally:
        model.release.set()


async def test_engine_from_config(fer_model: FerVAModel) -> None:
    cfg = AffectConfig(max_batch=7, max_wait_ms=3.0, infer_timeout_s=4.0, max_restarts=2)
    engine = AffectEngine.from_config(fer_model, cfg)
    assert (engine.max_batch, engine.max_wait_s, engine.timeout_s, engine.max_restarts) == (
        7,
        0.003,
        4.0,
        2,
    )


async def test_batching_wait_defaults_to_none_on_the_cpu_and_2_ms_elsewhere(
    fer_model: FerVAModel,
) -> None:
    # On the CPU a bigger batch costs as much per face: waiting for one only adds latency.
    assert fer_model.runtime.name == "onnxruntime-cpu"
    assert AffectEngine.from_config(fer_model, AffectConfig()).max_wait_s == 0.0

    class OnGpu(Faulty):
        runtime = type("Runtime", (), {"name": "tensorrt-fp16"})()

    gpu = OnGpu(fer_model, [])
    assert AffectEngine.from_config(gpu, AffectConfig()).max_wait_s == 0.002
    # Said in the config: kept as said.
    assert AffectEngine.from_config(fer_model, AffectConfig(max_wait_ms=5)).max_wait_s == 0.005


async def test_shutdown_is_not_blocked_by_a_hung_model(
    fer_model: FerVAModel, caplog: pytest.LogCaptureFixture
) -> None:
    model = Faulty(fer_model, ["hang"])
    try:
        engine = AffectEngine(model, timeout_s=600)
        async with engine:
            task = asyncio.create_task(engine.infer(_crops(1, 14)))
            await asyncio.to_thread(model.entered.wait, 60)
            task.cancel()
        # __aexit__ returned although the worker is still inside the model call
        assert model.calls == [1]
        assert any("did not stop" in r.getMessage() for r in caplog.records)
    finally:
        model.release.set()


class _Gate:
    """A VA model whose first call blocks until released; the second call says it began."""

    name = "gate-test"
    approximate = False
    input_size = 64

    def __init__(self) -> None:
        self.calls = 0
        self.entered, self.release, self.second = (threading.Event() for _ in range(3))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(timeout=30)
        else:
            self.second.set()
        return np.zeros((len(crops), 2), np.float32)


async def test_a_call_cancelled_as_its_answer_arrives_is_cancelled() -> None:
    """The answer of a call and its cancellation land in the same loop turn (a sink
    failed and cancelled the run just then). The cancellation must win: a call that
    swallowed it left the run waiting for frames that never came (`replay | head` hung
    under load in CI; `asyncio.wait_for` of Python 3.11 returns the answer instead)."""
    model = _Gate()
    crops = np.zeros((1, 64, 64), np.uint8)
    async with AffectEngine(model, max_batch=8, max_wait_ms=0.0, timeout_s=30.0) as engine:
        first = asyncio.create_task(engine.infer(crops))
        assert await asyncio.to_thread(model.entered.wait, 30)
        second = asyncio.create_task(engine.infer(crops))
        await asyncio.sleep(0)  # the second request is queued behind the first
        model.release.set()
        # Block the loop until the worker has posted the first answer and taken the
        # second request: the answer now waits in the loop's queue, then comes the cancel.
        assert model.second.wait(30)
        first.cancel()
        await asyncio.wait({first, second}, timeout=10)
    assert first.cancelled()
    assert second.done() and second.result().shape == (1, 2)
