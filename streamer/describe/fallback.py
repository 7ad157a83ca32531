"""The deterministic description of a VA position: circumplex quadrant and intensity.

It goes out the moment a track is due for a description, before (and whether or not)
the LLM answers. Same input, same words: replays stay byte-identical.
"""

from __future__ import annotations

import math

from streamer.describe.answer import Answer
from streamer.describe.prompts import TrackSummary
from streamer.describe.taxonomy import nearest_basic, nearest_complex

FALLBACK_MODEL = "fallback/circumplex-v1"

NEUTRAL_RADIUS = 0.2  # VA units: inside this circle the face reads as neutral
TREND_WORD_MIN = 0.05  # VA units per second: slower change is not worth a word

# quadrant (valence sign, arousal sign) -> (feeling words, expression words)
_QUADRANTS: dict[tuple[bool, bool], tuple[str, str]] = {
    (True, True): ("pleasant and energised", "an animated, cheerful expression"),
    (True, False): ("pleasant and calm", "a relaxed, content expression"),
    (False, True): ("unpleasant and tense", "a tense, displeased expression"),
    (False, False): ("unpleasant and subdued", "a subdued, downcast expression"),
}


def intensity_word(valence: float, arousal: float) -> str:
    """``neutral``, ``slightly``, ``moderately`` or ``strongly`` by distance from 0."""
    r = math.hypot(valence, arousal)
    if r < NEUTRAL_RADIUS:
        return "neutral"
    if r < 0.45:
        return "slightly"
    if r < 0.75:
        return "moderately"
    return "strongly"


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
    level = intensity_word(v, a)
    if level == "neutral":
        text = f"A neutral, composed expression {numbers}{_trend_words(summary)}."
    else:
        feeling, face = _QUADRANTS[(v >= 0.0, a >= 0.0)]
        text = f"{level.capitalize()} {feeling}: {face} {numbers}{_trend_words(summary)}."
    return Answer(
        basic=nearest_basic(v, a, NEUTRAL_RADIUS),
        complex=nearest_complex(v, a, 3),
        text=text,
    )
