"""The ``llm`` config section: defaults, bounds, loopback rule, YAML errors with lines."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamer.config import parse_config
from streamer.describe.config import LlmConfig, host_is_loopback
from streamer.errors import ConfigError


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("http://127.0.0.1:11434", True),
        ("http://localhost:11434", True),
        ("127.0.0.5:11434", True),
        ("http://[::1]:11434", True),
        ("https://LOCALHOST", True),
        ("http://10.0.0.5:11434", False),
        ("http://ollama.example.org", False),
        ("http://192.168.1.2", False),
        ("", False),
    ],
)
def test_host_is_loopback(host: str, loopback: bool) -> None:
    assert host_is_loopback(host) is loopback


def test_defaults_are_loopback_ollama_with_timeout() -> None:
    cfg = LlmConfig()
    assert cfg.provider == "ollama" and host_is_loopback(cfg.host)
    assert cfg.timeout_s > 0 and cfg.keep_alive


def test_remote_host_needs_explicit_permission() -> None:
    with pytest.raises(ValidationError, match="not a loopback address"):
        LlmConfig(host="http://10.1.2.3:11434")
    assert LlmConfig(host="http://10.1.2.3:11434", allow_remote_host=True).host.startswith("http")


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout_s": 0},
        {"max_concurrency": 0},
        {"queue_size": 0},
        {"interval_s": -1},
        {"provider": "openai"},
        {"host": "ftp://127.0.0.1"},
        {"reconnect_interval_s": 10, "reconnect_max_s": 5},
        {"min_gap_s": 10, "interval_s": 5},
        {"tiemout_s": 5},
        {"keep_alive": "  "},
        {"drain_timeout_s": -1},
    ],
)
def test_bad_values_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        LlmConfig(**bad)


def test_yaml_error_names_key_and_line() -> None:
    text = "llm:\n  provider: ollama\n  model: llama3.2\n  timeout: 5\n"
    with pytest.raises(ConfigError, match=r"<config>:4: llm.timeout: unknown key"):
        parse_config(text)


def test_example_config_file_is_valid() -> None:
    from pathlib import Path

    from streamer.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "llm.yaml"
    cfg = load_config(path)
    assert cfg.llm is not None and cfg.llm.provider == "ollama"
