"""The Ollama provider against the loopback server: each failure becomes our error type."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamer.describe import ANSWER_SCHEMA, TrackSummary, build_messages, parse_answer
from streamer.describe.config import LlmConfig
from streamer.describe.providers import ProviderPlugin, create_provider, provider_keys
from streamer.describe.providers.ollama import OllamaConfig, OllamaProvider
from streamer.errors import (
    ConfigError,
    DescriberError,
    InvalidAnswerError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from streamer.testing.ollama import FakeOllama

MESSAGES = build_messages(TrackSummary.point(0.4, -0.2))


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_tags_and_embed(fake_ollama: Callable[..., FakeOllama], stream: bool) -> None:
    srv = fake_ollama("happy")
    async with OllamaProvider(OllamaConfig(host=srv.url, stream=stream)) as p:
        ans = parse_answer(await p.complete(MESSAGES, ANSWER_SCHEMA))
        assert ans.basic == "happiness" and "valence +0.40, arousal -0.20" in ans.text
        assert "llama3.2:latest" in await p.list_models()
        vecs = await p.embed(["a big smile", "a big smile", "frown"], model="embedder")
        assert len(vecs) == 3 and vecs[0] == vecs[1] != vecs[2]
    body = srv.chat_bodies()[0]
    assert body["stream"] is stream and body["model"] == "llama3.2"
    assert body["options"]["temperature"] == 0.2 and body["format"] == ANSWER_SCHEMA
    assert srv.count("/api/embed") == 1 and srv.count("/api/tags") == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("error500", ProviderResponseError),
        ("malformed", InvalidAnswerError),
        ("slow", ProviderTimeoutError),
        ("refused", ProviderUnavailableError),
    ],
)
async def test_failures_are_translated(
    fake_ollama: Callable[..., FakeOllama],
    refused_url: str,
    mode: str,
    error: type,
    stream: bool,
) -> None:
    url = refused_url if mode == "refused" else fake_ollama(mode).url
    cfg = OllamaConfig(host=url, timeout_s=0.3, stream=stream)
    async with OllamaProvider(cfg) as p:
        with pytest.raises(error) as info:
            await p.complete(MESSAGES, ANSWER_SCHEMA)
    assert isinstance(info.value, DescriberError)
    assert info.value.__cause__ is not None  # raised from the library error


async def test_garbage_content_is_returned_for_validation(
    fake_ollama: Callable[..., FakeOllama],
) -> None:
    srv = fake_ollama("garbage")
    async with OllamaProvider(OllamaConfig(host=srv.url)) as p:
        raw = await p.complete(MESSAGES, ANSWER_SCHEMA)
    with pytest.raises(InvalidAnswerError):
        parse_answer(raw)


def test_registry() -> None:
    assert {"ollama", "llamacpp"} <= set(provider_keys())
    assert isinstance(create_provider(OllamaConfig()), OllamaProvider)
    bad = OllamaConfig.model_construct(**{**OllamaConfig().model_dump(), "provider": "nope"})
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        create_provider(bad)
    # A config of one provider never builds another provider.
    wrong = LlmConfig.model_construct(**{**LlmConfig().model_dump(), "provider": "ollama"})
    with pytest.raises(ConfigError, match="needs a OllamaConfig"):
        create_provider(wrong)


def test_plugin_key_must_match_its_config() -> None:
    ProviderPlugin("ollama", OllamaConfig, OllamaProvider)
    with pytest.raises(ValueError, match="expected 'echo'"):
        ProviderPlugin("echo", OllamaConfig, OllamaProvider)
