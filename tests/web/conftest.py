"""Fixtures of the web tests: a real RTSP camera and a real MQTT broker (real replays are
in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.mqtt import Broker
from streamer.testing.net import free_port
from streamer.testing.sources import RtspServer


@pytest.fixture
def face_camera(face_loop: Path) -> Iterator[RtspServer]:
    """A real GStreamer RTSP server streaming the face loop (tests using it: ``rtsp``)."""
    with RtspServer(face_loop) as srv:
        yield srv


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on loopback (tests using it are marked ``mqtt``)."""
    broker = Broker(tmp_path, free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
