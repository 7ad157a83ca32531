"""Fixtures of the describe tests: a real loopback server speaking the Ollama API."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _load_fake():  # tests/ has no packages; load the helper module by path
    name = "streamer_tests_ollama_fake"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("ollama_fake.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ollama_fake = _load_fake()
FakeOllama = ollama_fake.FakeOllama


@pytest.fixture
def fake_ollama() -> Iterator[Callable[..., object]]:
    """``fake_ollama(mode="happy", port=0)`` starts a server; all stop at teardown."""
    servers: list[object] = []

    def start(mode: str = "happy", port: int = 0) -> object:
        srv = FakeOllama(mode, port=port).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def refused_url() -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{ollama_fake.free_port()}"
