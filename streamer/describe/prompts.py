"""Prompts built from a track's valence/arousal trajectory: numbers and words only.

The LLM never sees an image. It reads the current VA value, and the mean, trend and
spread over a window of media time, plus the [-1, 1] convention, and answers with JSON
that :mod:`streamer.describe.answer` validates.
"""

from __future__ import annotations

import re

from streamer.describe.taxonomy import BASIC, COMPLEX
from streamer.summary import TrackSummary, summarize

__all__ = [
    "SYSTEM_PROMPT",
    "TrackSummary",
    "build_messages",
    "is_text_only",
    "summarize",
    "user_prompt",
]

SYSTEM_PROMPT = (
    "You interpret the facial affect of one person, measured by a camera as valence and "
    "arousal. Both are numbers in [-1, 1]. Valence -1 is very unpleasant, +1 very "
    "pleasant, 0 neutral. Arousal -1 is very calm or sleepy, +1 very excited or "
    "activated, 0 neutral. Answer only with a JSON object with three keys: "
    f'"basic": one of {", ".join(BASIC)}; '
    f'"complex": a list of one to three of {", ".join(COMPLEX)}; '
    '"description": one or two sentences describing the facial expression this person '
    "most likely shows (eyes, brows, mouth), without repeating the numbers."
)

# Characters a prompt may hold: letters, digits, spaces and plain punctuation. Anything
# else (control bytes, long base64-like runs) means something other than text leaked in.
_TEXT_ONLY = re.compile(r"[A-Za-z0-9 \n.,;:!?()\[\]'\"+\-=/%_]*")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{48,}")


def _s(x: float) -> str:
    return f"{x:+.2f}"


def user_prompt(summary: TrackSummary) -> str:
    """The user message: the trajectory in numbers and words."""
    s = summary
    if s.n <= 1:
        return (
            f"One observation: valence {_s(s.valence)}, arousal {_s(s.arousal)}. "
            "Name the emotion and describe the facial expression."
        )
    return (
        f"Observed for {s.span_s:.1f} s ({s.n} samples). "
        f"Current: valence {_s(s.valence)}, arousal {_s(s.arousal)}. "
        f"Mean over the window: valence {_s(s.mean_valence)}, arousal {_s(s.mean_arousal)}. "
        f"Trend per second: valence {_s(s.trend_valence)}, arousal {_s(s.trend_arousal)}. "
        f"Spread (standard deviation): valence {s.spread_valence:.2f}, "
        f"arousal {s.spread_arousal:.2f}. "
        "Name the emotion and describe the facial expression."
    )


def build_messages(summary: TrackSummary) -> list[dict[str, str]]:
    """Chat messages (``role``/``content``) for one description request."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(summary)},
    ]


def is_text_only(text: str) -> bool:
    """True when ``text`` is plain words and numbers (no binary or base64-like runs)."""
    return _TEXT_ONLY.fullmatch(text) is not None and _LONG_TOKEN.search(text) is None
