"""LLM descriptions of tracked faces from their valence/arousal (never from images).

    from streamer.describe import Describer
    async with Describer(cfg.llm, bus) as describer:
        ...

See :mod:`streamer.describe.describer` for the behaviour and counters,
:mod:`streamer.describe.providers` for the provider registry (``ollama``, ``llamacpp``).
"""

from streamer.describe.answer import ANSWER_SCHEMA, Answer, parse_answer
from streamer.describe.config import LlmConfig
from streamer.describe.describer import Describer
from streamer.describe.fallback import FALLBACK_MODEL, fallback_answer
from streamer.describe.prompts import TrackSummary, build_messages, summarize

__all__ = [
    "ANSWER_SCHEMA",
    "FALLBACK_MODEL",
    "Answer",
    "Describer",
    "LlmConfig",
    "TrackSummary",
    "build_messages",
    "fallback_answer",
    "parse_answer",
    "summarize",
]
