"""The circumplex table: one rule naming a (valence, arousal) position, used everywhere.

Russell's circumplex (1980) splits the valence/arousal plane into four quadrants. The
rule, shared by the replay summary, ``streamer subscribe`` and the fallback
description:

- a point closer than :data:`NEUTRAL_RADIUS` (0.2 VA units, Euclidean distance) to the
  origin is ``neutral``;
- any other point is named by the signs of valence and arousal, zero counting as
  positive: ``excited`` (V >= 0, A >= 0), ``calm`` (V >= 0, A < 0), ``tense``
  (V < 0, A >= 0), ``sad`` (V < 0, A < 0).

So (0.15, 0.10), 0.18 from the origin, is ``neutral``; (0.0, 0.2) is ``excited``.
Intensity words grow with the same distance: ``slightly`` from 0.2, ``moderately``
from 0.45, ``strongly`` from 0.75.
"""

from __future__ import annotations

import enum
import math

NEUTRAL_RADIUS = 0.2  # VA units: inside this circle a face reads as neutral
MODERATE_RADIUS = 0.45  # VA units: from here "moderately"
STRONG_RADIUS = 0.75  # VA units: from here "strongly"


class Quadrant(enum.StrEnum):
    """A region of the circumplex; the value is the name shown to users."""

    EXCITED = "excited"
    CALM = "calm"
    TENSE = "tense"
    SAD = "sad"
    NEUTRAL = "neutral"


# quadrant -> (feeling words, expression words) of the fallback description
WORDS: dict[Quadrant, tuple[str, str]] = {
    Quadrant.EXCITED: ("pleasant and energised", "an animated, cheerful expression"),
    Quadrant.CALM: ("pleasant and calm", "a relaxed, content expression"),
    Quadrant.TENSE: ("unpleasant and tense", "a tense, displeased expression"),
    Quadrant.SAD: ("unpleasant and subdued", "a subdued, downcast expression"),
    Quadrant.NEUTRAL: ("neutral", "a neutral, composed expression"),
}

_BY_SIGN = {
    (True, True): Quadrant.EXCITED,
    (True, False): Quadrant.CALM,
    (False, True): Quadrant.TENSE,
    (False, False): Quadrant.SAD,
}


def quadrant(valence: float, arousal: float) -> Quadrant:
    """The circumplex region of (valence, arousal) by the rule of the module docstring."""
    if math.hypot(valence, arousal) < NEUTRAL_RADIUS:
        return Quadrant.NEUTRAL
    return _BY_SIGN[(valence >= 0.0, arousal >= 0.0)]


def intensity_word(valence: float, arousal: float) -> str:
    """``neutral``, ``slightly``, ``moderately`` or ``strongly`` by distance from 0."""
    r = math.hypot(valence, arousal)
    if r < NEUTRAL_RADIUS:
        return "neutral"
    if r < MODERATE_RADIUS:
        return "slightly"
    if r < STRONG_RADIUS:
        return "moderately"
    return "strongly"


__all__ = ["NEUTRAL_RADIUS", "WORDS", "Quadrant", "intensity_word", "quadrant"]
