"""Config of the LLM describer. Owned by the describe stage.

One section with a ``provider`` key (``ollama`` by default, or ``llamacpp`` for a local
GGUF run in process, or any provider registered in :mod:`streamer.describe.providers`).
:class:`LlmConfig` holds what every provider shares; each provider declares a subclass
with its own fields next to its code, and the section is a union of them on
``provider`` (:data:`LlmSection`, built from the registry; ``provider`` may be left out
for ollama). A key of another provider is an error.

    llm:
      provider: ollama
      host: http://127.0.0.1:11434
      model: llama3.2
      timeout_s: 20
      interval_s: 5
      min_change: 0.25
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from pydantic import Field, TypeAdapter, model_validator

from streamer.config_base import StrictModel

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def host_is_loopback(host: str) -> bool:
    """True when ``host`` (a URL or ``host[:port]``) names this machine's loopback."""
    text = host.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        name = urlsplit(text).hostname or ""
    except ValueError:
        return False
    if name.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LlmConfig(StrictModel):
    """A text-only LLM that names and describes a track's affect from its VA numbers.

    The settings every provider shares (the describer's); each provider subclasses it
    with its own ``provider`` key and fields (see :mod:`streamer.describe.providers`).
    """

    provider: str = Field(
        "ollama", description="LLM provider key: ollama (HTTP server), llamacpp (in process)"
    )
    model: str = Field(
        "llama3.2",
        min_length=1,
        description="the model the provider runs (ollama: its tag; llamacpp names its "
        "GGUF file instead)",
    )
    timeout_s: float = Field(
        20.0, gt=0.0, le=600.0, description="hard limit on one request, streaming included"
    )
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="sampling temperature")
    max_tokens: int = Field(200, ge=16, le=4096, description="most tokens in one answer")
    interval_s: float = Field(
        5.0, gt=0.0, le=3600.0, description="describe each track every this many media seconds"
    )
    min_change: float = Field(
        0.25,
        gt=0.0,
        le=2.9,
        description="also describe when smoothed VA moved this far (Euclidean, VA units) "
        "since the last description",
    )
    min_gap_s: float = Field(
        1.0,
        ge=0.0,
        le=3600.0,
        description="media seconds at least between two descriptions of one track",
    )
    warmup_s: float = Field(
        0.5,
        ge=0.0,
        le=60.0,
        description="media seconds a track is observed before its first description",
    )
    window_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="media seconds of VA history summarised in a prompt"
    )
    max_concurrency: int = Field(
        1, ge=1, le=64, description="LLM requests in flight at once over all tracks"
    )
    queue_size: int = Field(
        8, ge=1, le=10000, description="pending LLM jobs; the oldest is dropped when full"
    )
    inbox_size: int = Field(
        2000, ge=10, le=1_000_000, description="bus messages buffered for the describer"
    )
    max_tracks: int = Field(
        256, ge=1, le=100_000, description="tracks remembered at once (least recent evicted)"
    )
    drain_timeout_s: float = Field(
        10.0,
        ge=0.0,
        le=600.0,
        description="at the end of a replay, wait this long for LLM answers still pending",
    )
    reconnect_interval_s: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="after a failed request, no new request for this long (doubles per "
        "failure up to reconnect_max_s)",
    )
    reconnect_max_s: float = Field(
        60.0, gt=0.0, le=86400.0, description="cap of the reconnection back-off"
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.reconnect_max_s < self.reconnect_interval_s:
            raise ValueError("reconnect_max_s must be >= reconnect_interval_s")
        if self.min_gap_s > self.interval_s:
            raise ValueError("min_gap_s must be <= interval_s")
        return self


if TYPE_CHECKING:
    LlmSection = LlmConfig
else:
    # Built last: the providers' configs subclass LlmConfig above.
    from streamer.describe.providers import llm_config_union

    LlmSection = llm_config_union()


def parse_llm_config(data: dict[str, Any]) -> LlmConfig:
    """Validate an ``llm`` section (a mapping) into its provider's config.

    Raises:
        pydantic.ValidationError: a bad value, an unknown key or an unknown provider.
    """
    adapter: TypeAdapter[LlmConfig] = TypeAdapter(LlmSection)
    return adapter.validate_python(data)


__all__ = ["LlmConfig", "LlmSection", "host_is_loopback", "parse_llm_config"]
