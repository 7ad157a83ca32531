"""Emotion vocabularies the describer answers in, with approximate circumplex positions.

``BASIC`` is Ekman's six plus neutral; ``COMPLEX`` the 26 EMOTIC categories (Kosti et
al., 2019). Each label carries a hand-placed (valence, arousal) point in [-1, 1]; the
points are approximate readings of the circumplex literature, used only by the
deterministic fallback and as a baseline in ``tools/evaluate.py``, never as ground truth.
"""

from __future__ import annotations

import math

from streamer.circumplex import NEUTRAL_RADIUS

# label -> (valence, arousal); approximate, see the module docstring.
BASIC_POINTS: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happiness": (0.75, 0.35),
    "surprise": (0.2, 0.75),
    "fear": (-0.6, 0.7),
    "anger": (-0.65, 0.55),
    "disgust": (-0.65, 0.25),
    "sadness": (-0.65, -0.4),
}

COMPLEX_POINTS: dict[str, tuple[float, float]] = {
    "peace": (0.5, -0.6),
    "affection": (0.7, 0.1),
    "esteem": (0.5, 0.05),
    "anticipation": (0.3, 0.45),
    "engagement": (0.35, 0.3),
    "confidence": (0.55, 0.3),
    "happiness": (0.75, 0.35),
    "pleasure": (0.7, 0.15),
    "excitement": (0.6, 0.8),
    "surprise": (0.2, 0.75),
    "sympathy": (0.3, -0.2),
    "doubt/confusion": (-0.3, 0.1),
    "disconnection": (-0.2, -0.5),
    "fatigue": (-0.3, -0.8),
    "embarrassment": (-0.4, 0.3),
    "yearning": (0.05, 0.15),
    "disapproval": (-0.5, 0.15),
    "aversion": (-0.6, 0.3),
    "annoyance": (-0.5, 0.4),
    "anger": (-0.65, 0.55),
    "sensitivity": (-0.2, 0.05),
    "sadness": (-0.65, -0.4),
    "disquietment": (-0.4, 0.45),
    "fear": (-0.6, 0.7),
    "pain": (-0.8, 0.4),
    "suffering": (-0.8, 0.0),
}

BASIC: tuple[str, ...] = tuple(BASIC_POINTS)
COMPLEX: tuple[str, ...] = tuple(COMPLEX_POINTS)

# Words small models use instead of the labels; mapped before validation.
SYNONYMS: dict[str, str] = {
    "happy": "happiness",
    "joy": "happiness",
    "angry": "anger",
    "sad": "sadness",
    "fearful": "fear",
    "afraid": "fear",
    "surprised": "surprise",
    "disgusted": "disgust",
    "calm": "neutral",
    "doubt": "doubt/confusion",
    "confusion": "doubt/confusion",
    "doubt / confusion": "doubt/confusion",
    "doubt-confusion": "doubt/confusion",
    "disquiet": "disquietment",
    "excited": "excitement",
    "tired": "fatigue",
    "embarrassed": "embarrassment",
    "annoyed": "annoyance",
    "confident": "confidence",
    "peaceful": "peace",
}


def normalize_label(label: str) -> str:
    """Lower-case, trim and map common synonyms (``"Happy"`` -> ``"happiness"``)."""
    key = " ".join(label.strip().lower().split())
    return SYNONYMS.get(key, key)


def _nearest(points: dict[str, tuple[float, float]], v: float, a: float) -> list[str]:
    return sorted(points, key=lambda k: (math.dist(points[k], (v, a)), k))


def nearest_basic(valence: float, arousal: float, neutral_radius: float = NEUTRAL_RADIUS) -> str:
    """The basic category whose circumplex point is closest; ``neutral`` near the origin."""
    if math.hypot(valence, arousal) < neutral_radius:
        return "neutral"
    return _nearest({k: p for k, p in BASIC_POINTS.items() if k != "neutral"}, valence, arousal)[0]


def nearest_complex(valence: float, arousal: float, k: int = 3) -> tuple[str, ...]:
    """The ``k`` EMOTIC categories closest to (valence, arousal), nearest first."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return tuple(_nearest(COMPLEX_POINTS, valence, arousal)[:k])
