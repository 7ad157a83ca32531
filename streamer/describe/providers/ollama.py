"""The Ollama provider: ``/api/chat`` with a JSON-schema ``format``, through ``ollama``.

The ``ollama`` client has no default timeout, so every request gets two: httpx's
per-phase timeout and an overall ``asyncio.timeout`` that also bounds a stream that
trickles. Library errors become the describer errors of :mod:`streamer.errors` at this boundary.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import pydantic
from pydantic import Field, field_validator, model_validator

from streamer.describe.config import LlmConfig, host_is_loopback
from streamer.describe.providers import ProviderPlugin
from streamer.errors import (
    InvalidAnswerError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)

if TYPE_CHECKING:  # the client (about 80 ms to import) loads when a provider is entered
    import ollama

logger = logging.getLogger(__name__)

# httpx logs every request at INFO; one line per description would drown the log.
# Only when nobody configured that logger (level NOTSET).
_httpx_logger = logging.getLogger("httpx")
if _httpx_logger.level == logging.NOTSET:
    _httpx_logger.setLevel(logging.WARNING)

CONNECT_TIMEOUT_S = 5.0  # seconds; a loopback server that does not accept is down


class OllamaConfig(LlmConfig):
    """The ``llm`` section for an Ollama server (the default provider)."""

    provider: Literal["ollama"] = Field("ollama", description="LLM provider key")
    host: str = Field(
        "http://127.0.0.1:11434",
        description="ollama: server URL; loopback unless allow_remote_host is true",
    )
    allow_remote_host: bool = Field(
        False,
        description="ollama: permit a non-loopback host (VA numbers and text then leave "
        "this machine; never images)",
    )
    keep_alive: str | float = Field(
        "5m",
        description="ollama: how long the server keeps the model loaded: a duration "
        "('5m', '1h') or seconds (-1 = forever, 0 = unload at once)",
    )
    stream: bool = Field(False, description="ollama: stream the answer (NDJSON) and join it")

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
    def _loopback_unless_allowed(self) -> Self:
        if not self.allow_remote_host and not host_is_loopback(self.host):
            raise ValueError(
                f"llm.host {self.host!r} is not a loopback address; set "
                "allow_remote_host: true to send VA numbers to another machine"
            )
        return self


class OllamaProvider:
    """Talks to one Ollama server (``cfg.host``) about one model (``cfg.model``)."""

    def __init__(self, cfg: OllamaConfig) -> None:
        self._cfg = cfg
        self._client: ollama.AsyncClient | None = None
        self.label = f"ollama:{cfg.model}"

    async def __aenter__(self) -> Self:
        import httpx
        import ollama

        timeout = httpx.Timeout(
            self._cfg.timeout_s, connect=min(CONNECT_TIMEOUT_S, self._cfg.timeout_s)
        )
        self._client = ollama.AsyncClient(host=self._cfg.host, timeout=timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None

    @property
    def client(self) -> ollama.AsyncClient:
        if self._client is None:
            raise RuntimeError("OllamaProvider used outside 'async with'")
        return self._client

    async def _call(self, what: str, coro_fn: Any) -> Any:
        """Run ``coro_fn()`` under the hard timeout; translate every library error."""
        import httpx  # loaded by __aenter__ already
        import ollama

        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                return await coro_fn()
        except TimeoutError as err:
            raise ProviderTimeoutError(
                f"{what}: no answer from {self._cfg.host} within {self._cfg.timeout_s:g} s"
            ) from err
        except httpx.TimeoutException as err:
            raise ProviderTimeoutError(
                f"{what}: {type(err).__name__} from {self._cfg.host}"
            ) from err
        except ConnectionError as err:  # ollama turns httpx.ConnectError into this
            raise ProviderUnavailableError(f"{what}: cannot connect to {self._cfg.host}") from err
        except httpx.TransportError as err:
            raise ProviderUnavailableError(
                f"{what}: connection to {self._cfg.host} failed: {type(err).__name__}"
            ) from err
        except ollama.ResponseError as err:
            raise ProviderResponseError(
                f"{what}: server error {err.status_code}: {str(err.error)[:120]}"
            ) from err
        except (json.JSONDecodeError, pydantic.ValidationError, TypeError) as err:
            raise InvalidAnswerError(f"{what}: server sent malformed JSON") from err

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """One chat request; returns the assistant's content (possibly blank)."""
        cfg = self._cfg
        options = {"temperature": cfg.temperature, "num_predict": cfg.max_tokens}

        async def run() -> str:
            if cfg.stream:
                parts: list[str] = []
                stream = await self.client.chat(
                    model=cfg.model,
                    messages=messages,
                    format=schema,
                    options=options,
                    keep_alive=cfg.keep_alive,
                    stream=True,
                )
                async for chunk in stream:
                    parts.append(chunk.message.content or "")
                return "".join(parts)
            resp = await self.client.chat(
                model=cfg.model,
                messages=messages,
                format=schema,
                options=options,
                keep_alive=cfg.keep_alive,
                stream=False,
            )
            return resp.message.content or ""

        result: str = await self._call("chat", run)
        return result

    async def list_models(self) -> list[str]:
        """Model tags the server has (``/api/tags``)."""

        async def run() -> list[str]:
            resp = await self.client.list()
            return [m.model for m in resp.models if m.model]

        result: list[str] = await self._call("tags", run)
        return result

    async def embed(self, texts: Sequence[str], model: str | None = None) -> list[list[float]]:
        """Embedding vectors for ``texts`` (``/api/embed``), one per text, in order."""

        async def run() -> list[list[float]]:
            resp = await self.client.embed(
                model=model or self._cfg.model, input=list(texts), keep_alive=self._cfg.keep_alive
            )
            return [list(map(float, e)) for e in resp.embeddings]

        vectors: list[list[float]] = await self._call("embed", run)
        if len(vectors) != len(texts):
            raise InvalidAnswerError(f"embed: expected {len(texts)} vector(s), got {len(vectors)}")
        return vectors


PLUGIN = ProviderPlugin("ollama", OllamaConfig, OllamaProvider)
