"""The composition root: a pipeline built from fakes, its sinks entered and closed in order."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pytest

from streamer import compose
from streamer.compose import Composition, SinkContext, SinkOptions, SinkSpec, build_pipeline
from streamer.config import AppConfig
from streamer.errors import PublishError
from streamer.messages import Detection, Frame, Message, VASample
from streamer.pipeline import FaceDetector
from streamer.sinks import Metric


class _OneFace:
    """A detector that finds one face in the middle of every frame."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        return [Detection((w * 0.3, h * 0.2, w * 0.7, h * 0.8), 0.9)]


class _Constant:
    """A VA model answering (0.5, -0.25) for every face."""

    name = "constant-test"
    approximate = False
    input_size = 64

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.5, -0.25]], np.float32), (len(crops), 1))


def _one_face() -> FaceDetector:
    return _OneFace()


async def _frames(n: int) -> AsyncIterator[Frame]:
    rng = np.random.default_rng(1)
    for i in range(n):
        yield Frame("cam", i, i / 10, rng.integers(0, 255, (120, 160, 3), np.uint8))


class _Stuck(_Constant):
    """A VA model that blocks until released: a slow network, frames pile up behind it."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.release.wait(30)
        return super().predict(crops)


class _CountingFace(_OneFace):
    """:class:`_OneFace` that sets ``reached`` on its ``n``-th call."""

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n
        self.reached = threading.Event()

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        if self.calls >= self.n:
            self.reached.set()
        return super().detect(image)


async def test_a_run_cancelled_with_its_handoff_full_ends_at_once() -> None:
    """A failed sink cancels the run (``replay | head``: the reader left). When that
    happens while frames wait for a slow VA step, the run must end, not wait for room in
    the hand-off queue that nobody will ever make (it hung under load in CI)."""
    cfg = AppConfig.model_validate(
        {
            "faces": {
                "detector": {"detect_every_n_frames": 1, "max_detect_every_n_frames": 1},
                "tracker": {"min_hits": 1},
            }
        }
    )
    model = _Stuck()
    # Frame 0 is in the VA step, frames 1 and 2 fill the hand-off (2 places): from the
    # 4th detection on, the prepare step can only wait for room.
    detector = _CountingFace(4)
    pipe = build_pipeline(cfg, model=model, detector_factory=lambda: detector)
    async with pipe:
        task = asyncio.create_task(pipe.run_camera("cam", _frames(100), lossless=True))
        assert await asyncio.to_thread(detector.reached.wait, 30)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        model.release.set()
    assert done == {task} and task.cancelled()


def _pipeline() -> Any:
    # No model store: the model and the detector factory are passed in.
    return build_pipeline(AppConfig(), model=_Constant(), detector_factory=_one_face)


async def test_fakes_drive_the_pipeline_and_the_jsonl_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    pipe = _pipeline()
    async with Composition(pipe, SinkOptions(out=out, replay=True)):
        stats = await pipe.run_camera("cam", _frames(12), lossless=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    va = [r for r in records if r["schema"] == "streamer.va/1"]
    assert stats.frames == 12 and len(va) == stats.faces > 0
    assert {r["model"] for r in va} == {"constant-test"}
    assert all(r["valence_raw"] == 0.5 and r["arousal_raw"] == -0.25 for r in va)


class _Recorder:
    """An optional sink that records its lifecycle and what the bus gave it."""

    def __init__(self, ctx: SinkContext, log: list[str]) -> None:
        self.sub = ctx.bus.subscribe("recorder", maxsize=10_000, lossless=True)
        self.log = log
        self.seen: list[Message] = []

    async def __aenter__(self) -> _Recorder:
        self.log.append("enter")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.log.append("exit")

    async def flush(self, *, ok: bool, replay: bool) -> None:
        while (msg := self.sub.get_nowait()) is not None:
            self.seen.append(msg)
        self.log.append(f"flush ok={ok} replay={replay}")

    def metrics(self) -> list[Metric]:
        return [Metric.counter("recorder_seen", "messages the recorder took", len(self.seen))]


@pytest.fixture
def recorder_sink() -> Iterator[list[str]]:
    log: list[str] = []

    spec = SinkSpec(
        "recorder", lambda cfg: cfg.output.jsonl is None, lambda ctx: _Recorder(ctx, log)
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compose, "SINKS", (*compose.SINKS, spec))
        yield log


async def test_an_optional_sink_is_entered_fed_and_closed(recorder_sink: list[str]) -> None:
    pipe = _pipeline()
    async with Composition(pipe, SinkOptions(replay=True)) as run:
        assert recorder_sink == ["enter"] and "recorder" in run.sinks
        stats = await pipe.run_camera("cam", _frames(5), lossless=True)
    assert recorder_sink == ["enter", "flush ok=True replay=True", "exit"]
    recorder = run.sinks["recorder"]
    assert isinstance(recorder, _Recorder)
    samples = [m for m in recorder.seen if isinstance(m, VASample)]
    assert len(samples) == stats.faces > 0
    seen = [m for m in run.view.sink_metrics() if m.name == "recorder_seen"]
    assert seen and seen[0].values == (
        ((), float(len(recorder.seen))),
    )  # its metrics reach the view


async def test_a_sink_whose_section_is_unset_is_not_entered(
    recorder_sink: list[str], tmp_path: Path
) -> None:
    cfg = AppConfig.model_validate({"output": {"jsonl": str(tmp_path / "x.jsonl")}})
    pipe = build_pipeline(cfg, model=_Constant(), detector_factory=_one_face)
    async with Composition(pipe, SinkOptions(replay=True)) as run:
        await pipe.run_camera("cam", _frames(2), lossless=True)
    assert recorder_sink == [] and "recorder" not in run.sinks


FULL = Path("/dev/full")  # every write fails with ENOSPC: a full disk, for real


@pytest.mark.skipif(not FULL.exists(), reason="/dev/full not available on this system")
async def test_a_failing_output_stops_the_run_with_its_own_error() -> None:
    full = FULL
    pipe = _pipeline()
    with pytest.raises(PublishError, match=r"^/dev/full: cannot write output: No space left"):
        async with Composition(pipe, SinkOptions(out=full, atomic_out=False)):
            await pipe.run_camera("cam", _frames(200), lossless=False)


async def test_a_composition_is_single_use() -> None:
    composition = Composition(_pipeline())
    async with composition:
        pass
    with pytest.raises(RuntimeError, match="Composition cannot be entered twice"):
        async with composition:
            pass
