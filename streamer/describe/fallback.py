"""The deterministic description of a VA position: circumplex quadrant and intensity.

The quadrant and intensity follow :mod:`streamer.circumplex`. It goes out the moment a
track is due for a description, before (and whether or not) the LLM answers. Same input,
same words: replays stay byte-identical.
"""

from __future__ import annotations

from streamer.circumplex import NEUTRAL_RADIUS, WORDS, Quadrant, intensity_word, quadrant
from streamer.describe.answer import Answer
from streamer.describe.taxonomy import nearest_basic, nearest_complex
from streamer.summary import TrackSummary

FALLBACK_MODEL = "fallback/circumplex-v1"

TREND_WORD_MIN = 0.05  # VA units per second: slower change is not worth a word


def _trend_words(s: TrackSummary) -> str:
    parts = []
    for name, slope in (("valence", s.trend_valence), ("arousal", s.trend_arousal)):
        if slope >= TREND_WORD_MIN:
            parts.append(f"{name} rising")
        elif slope <= -TREND_WORD_MIN:
            parts.append(f"{name} falling")
    return f"; {' and '.join(parts)}" if parts else ""


def fallback_answer(summary: TrackSummary) -> Answer:
    """Categories and one sentence for the current VA of ``summary``."""
    v, a = summary.valence, summary.arousal
    numbers = f"(valence {v:+.2f}, arousal {a:+.2f})"
    where = quadrant(v, a)
    if where is Quadrant.NEUTRAL:
        text = f"A neutral, composed expression {numbers}{_trend_words(summary)}."
    else:
        level = intensity_word(v, a)
        feeling, face = WORDS[where]
        text = f"{level.capitalize()} {feeling}: {face} {numbers}{_trend_words(summary)}."
    return Answer(
        basic=nearest_basic(v, a, NEUTRAL_RADIUS),
        complex=nearest_complex(v, a, 3),
        text=text,
    )


__all__ = ["FALLBACK_MODEL", "NEUTRAL_RADIUS", "fallback_answer", "intensity_word"]
