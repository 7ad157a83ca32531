"""LLM providers behind a registry keyed by ``llm.provider``.

A provider is an async context manager with ``label`` (names the model in outputs) and
``complete(messages, schema) -> str`` (the raw answer text), raising only the errors of
:mod:`streamer.describe.errors`. Modules load lazily, so an absent optional package
(``llama_cpp``) costs nothing until that provider is chosen.

    provider = create_provider(cfg)
    async with provider:
        text = await provider.complete(build_messages(summary), ANSWER_SCHEMA)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from streamer.describe.config import LlmConfig
from streamer.errors import ConfigError


class Provider(Protocol):
    """What the describer and the evaluation tool need from an LLM."""

    label: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """Answer text for ``messages``, constrained to ``schema`` where supported."""
        ...


ProviderFactory = Callable[[LlmConfig], Provider]

# key -> "module:attribute" (imported on first use) or a factory registered at run time.
_REGISTRY: dict[str, str | ProviderFactory] = {
    "ollama": "streamer.describe.providers.ollama:OllamaProvider",
    "llamacpp": "streamer.describe.providers.llamacpp:LlamaCppProvider",
}


def register_provider(key: str, factory: ProviderFactory) -> None:
    """Add or replace a provider under ``key`` (for plug-ins)."""
    _REGISTRY[key] = factory


def provider_keys() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def create_provider(cfg: LlmConfig) -> Provider:
    """Build the provider ``cfg.provider`` names (not yet entered).

    Raises:
        ConfigError: no provider has that key.
    """
    entry = _REGISTRY.get(cfg.provider)
    if entry is None:
        raise ConfigError(
            f"llm.provider: unknown provider {cfg.provider!r}; known: {', '.join(_REGISTRY)}"
        )
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module_name), attr)
    return entry(cfg)
