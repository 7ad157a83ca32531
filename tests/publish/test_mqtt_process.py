"""Killing the process that runs the publisher makes the broker deliver the last will."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from streamer.testing.mqtt import Broker
from tests.helpers.mqtt import Collector, wait_until

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(60)]

HELPER = Path(__file__).with_name("publisher_proc.py")


async def test_sigkill_makes_broker_publish_offline(broker: Broker) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        broker.host,
        str(broker.port),
        "kill",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with Collector(broker.host, broker.port, "kill/#") as col:
            await wait_until(lambda: b"online" in col.payloads("kill/available"), 30, "online")
            await wait_until(lambda: col.payloads("kill/proc/faces/1/va"), 30, "VA flowing")
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
            await wait_until(
                lambda: col.payloads("kill/available")[-1:] == [b"offline"],
                30,
                "last will 'offline'",
            )
        # A client that connects later sees the retained will too.
        async with Collector(broker.host, broker.port, "kill/available") as late:
            await wait_until(lambda: late.messages, what="retained availability")
            assert late.messages[0][1] == b"offline" and late.messages[0][2] is True
    finally:
        if proc.returncode is None:
            proc.kill()
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    assert "Traceback" not in stderr.decode(errors="replace")
