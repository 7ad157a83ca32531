"""Fixtures of the publish tests: a real mosquitto broker on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer.testing.mqtt import MOSQUITTO, Broker
from streamer.testing.net import free_port


@pytest.fixture
def mosquitto_bin() -> str:
    """The broker binary (tests using it are marked ``mqtt``: skipped without mosquitto)."""
    assert MOSQUITTO is not None, "mosquitto is not installed"
    return MOSQUITTO


@pytest.fixture
def make_broker(mosquitto_bin: str, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory: ``make_broker(extra_conf="", start=True)``; every broker is stopped after."""
    brokers: list[Broker] = []

    def make(extra_conf: str = "", start: bool = True, port: int | None = None) -> Broker:
        b = Broker(tmp_path, port or free_port(), extra_conf)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in brokers:
        b.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    """A running anonymous broker on a free loopback port."""
    return make_broker()
