"""Single-use context managers say so when entered again."""

from __future__ import annotations

import asyncio

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


async def test_cancel_and_wait_ends_the_tasks_and_never_swallows_the_callers_cancel() -> None:
    """Stopping owned tasks: they end, their CancelledError stays with them, and a cancel
    of the caller that lands while it waits still stops the caller."""
    from streamer.lifecycle import cancel_and_wait

    ended = asyncio.Event()

    async def owned() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await ended.wait()  # a slow clean-up: the caller is cancelled meanwhile

    task = asyncio.create_task(owned())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0)  # the stopper waits for the owned task's clean-up
    stopper.cancel()
    ended.set()
    await asyncio.wait({stopper, task})
    assert stopper.cancelled() and task.cancelled()

    quick = asyncio.create_task(asyncio.Event().wait())
    await cancel_and_wait(quick)  # its CancelledError is not raised here
    assert quick.cancelled()


async def test_cancel_and_wait_raises_what_an_owned_task_failed_with() -> None:
    """A dashboard whose server loop died must not end the run as if all went well."""
    from streamer.lifecycle import cancel_and_wait

    async def fails() -> None:
        raise RuntimeError("server loop failed")

    failed = asyncio.create_task(fails())
    idle = asyncio.create_task(asyncio.Event().wait())
    await asyncio.wait({failed})
    with pytest.raises(RuntimeError, match="server loop failed"):
        await cancel_and_wait(idle, failed)
    assert idle.cancelled()  # stopped all the same
