"""An MQTT client still connected when a live run's loop ends disconnects inside that loop:
it is never collected after its loop closed (``RuntimeError: Event loop is closed`` as
an unraisable exception, seen at the end of the cluster tests)."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import aiomqtt
import pytest

from streamer.runtime.loop import run_in_fresh_loop
from streamer.testing.mqtt import Broker

pytestmark = pytest.mark.mqtt


def test_a_client_left_connected_is_closed_inside_its_loop(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[str] = []

    def hook(u: Any) -> None:
        unraisable.append(f"{u.exc_type.__name__}: {u.exc_value} ({u.object!r})")

    monkeypatch.setattr(sys, "unraisablehook", hook)
    closed: list[bool] = []

    async def main() -> None:
        connected = asyncio.Event()

        async def session() -> None:  # a sink whose task the run never ended
            try:
                async with aiomqtt.Client(broker.host, broker.port) as client:
                    await client.subscribe("x/#")
                    connected.set()
                    await asyncio.sleep(3600)
            finally:
                closed.append(True)

        asyncio.get_running_loop().create_task(session(), name="forgotten-session")
        await connected.wait()

    run_in_fresh_loop(main())
    gc.collect()
    assert closed == [True], "the task was ended inside its loop"
    assert unraisable == []
