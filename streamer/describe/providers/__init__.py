"""LLM providers behind a registry keyed by ``llm.provider``.

A provider is an async context manager with ``label`` (names the model in outputs) and
``complete(messages, schema) -> str`` (the raw answer text), raising only the errors of
the describer errors of :mod:`streamer.errors`.

Adding a provider is one new module in this package that declares, in one place, its
key, its config (a subclass of :class:`~streamer.describe.config.LlmConfig` with
``provider: Literal["key"]`` and its own fields) and its factory::

    PLUGIN = ProviderPlugin("mine", MineConfig, MineProvider)

Every module of the package with a ``PLUGIN`` is found at start-up and the ``llm``
config section is built from them, so ``provider: mine`` works in YAML at once.
Modules are imported to build the config: an optional package (``llama_cpp``) is
imported inside the provider's methods, never at module level.

    provider = create_provider(cfg)
    async with provider:
        text = await provider.complete(build_messages(summary), ANSWER_SCHEMA)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, Any, Protocol, Self, Union

from pydantic import Discriminator, Tag

from streamer.describe.config import LlmConfig
from streamer.errors import ConfigError
from streamer.plugins import check_key_default, discover

DEFAULT_PROVIDER = "ollama"  # the provider of an llm section without a provider key


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


ProviderFactory = Callable[[Any], Provider]


@dataclass(frozen=True)
class ProviderPlugin:
    """One LLM provider: its key, its config class and its factory.

    Raises:
        ValueError: the config's ``provider`` default is not ``key``.
    """

    key: str
    config: type[LlmConfig]
    create: ProviderFactory

    def __post_init__(self) -> None:
        check_key_default(self.key, self.config, "provider")


@functools.cache
def provider_plugins() -> dict[str, ProviderPlugin]:
    """Every provider plugin of this package, by key (modules found and imported once)."""
    return discover(__name__, __path__, ProviderPlugin)


def provider_keys() -> tuple[str, ...]:
    return tuple(provider_plugins())


def _provider_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("provider", DEFAULT_PROVIDER))
    return str(getattr(value, "provider", DEFAULT_PROVIDER))


def llm_config_union() -> Any:
    """The ``llm`` config type: every provider's config, chosen by ``provider``."""
    plugins = provider_plugins()
    members = tuple(Annotated[p.config, Tag(key)] for key, p in plugins.items())
    pick = Discriminator(
        _provider_of,
        custom_error_type="unknown_provider",
        custom_error_message=f"unknown LLM provider; known: {', '.join(plugins)}",
    )
    return Annotated[Union[members], pick]  # noqa: UP007


def create_provider(cfg: LlmConfig) -> Provider:
    """Build the provider ``cfg.provider`` names (not yet entered).

    Raises:
        ConfigError: no provider has that key, or ``cfg`` is not its config class.
    """
    plugin = provider_plugins().get(cfg.provider)
    if plugin is None:
        raise ConfigError(
            f"llm.provider: unknown provider {cfg.provider!r}; known: "
            f"{', '.join(provider_plugins())}"
        )
    if not isinstance(cfg, plugin.config):
        raise ConfigError(
            f"llm.provider {cfg.provider!r} needs a {plugin.config.__name__}, got "
            f"{type(cfg).__name__}"
        )
    return plugin.create(cfg)
