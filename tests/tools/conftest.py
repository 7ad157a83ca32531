"""Fixtures of the tools tests: the evaluation tool as a module, the fake Ollama server."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def evaluate_tool() -> ModuleType:
    """``tools/evaluate.py`` imported as a module (its ``main(argv)`` returns the exit code)."""
    return _load("streamer_tools_evaluate", ROOT / "tools" / "evaluate.py")


@pytest.fixture
def fake_ollama() -> Iterator[Callable[..., object]]:
    """``fake_ollama(mode)``: a real loopback server speaking the Ollama API."""
    fake = _load("streamer_tests_ollama_fake", ROOT / "tests" / "describe" / "ollama_fake.py")
    servers: list[object] = []

    def start(mode: str = "happy", port: int = 0) -> object:
        srv = fake.FakeOllama(mode, port=port).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def free_url() -> str:
    fake = _load("streamer_tests_ollama_fake", ROOT / "tests" / "describe" / "ollama_fake.py")
    return f"http://127.0.0.1:{fake.free_port()}"
