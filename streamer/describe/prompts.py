"""Prompts built from a track's valence/arousal trajectory: numbers and words only.

The LLM never sees an image. It reads the current VA value, and the mean, trend and
spread over a window of media time, plus the [-1, 1] convention, and answers with JSON
that :mod:`streamer.describe.answer` validates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from streamer.describe.taxonomy import BASIC, COMPLEX
from streamer.messages import clamp_va

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


@dataclass(frozen=True, slots=True)
class TrackSummary:
    """What a prompt says about one track's recent affect.

    Attributes:
        n: samples in the window.
        span_s: media seconds the window covers.
        valence, arousal: the current (latest smoothed) value.
        mean_valence, mean_arousal: means over the window.
        trend_valence, trend_arousal: least-squares slope over the window, VA units per s.
        spread_valence, spread_arousal: population standard deviation over the window.
    """

    n: int
    span_s: float
    valence: float
    arousal: float
    mean_valence: float
    mean_arousal: float
    trend_valence: float
    trend_arousal: float
    spread_valence: float
    spread_arousal: float

    @classmethod
    def point(cls, valence: float, arousal: float) -> TrackSummary:
        """A summary of one observation (no trend, no spread), e.g. for evaluation rows."""
        v, a = clamp_va(valence), clamp_va(arousal)
        return cls(1, 0.0, v, a, v, a, 0.0, 0.0, 0.0, 0.0)


def _slope(ts: Sequence[float], xs: Sequence[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt = sum(ts) / n
    mx = sum(xs) / n
    den = sum((t - mt) ** 2 for t in ts)
    if den <= 1e-12:
        return 0.0
    s = sum((t - mt) * (x - mx) for t, x in zip(ts, xs, strict=True)) / den
    return s if math.isfinite(s) else 0.0


def summarize(samples: Sequence[tuple[float, float, float]]) -> TrackSummary:
    """Summarise ``(t, valence, arousal)`` samples, oldest first (at least one).

    Raises:
        ValueError: when ``samples`` is empty.
    """
    if not samples:
        raise ValueError("summarize needs at least one sample")
    ts = [s[0] for s in samples]
    vs = [clamp_va(s[1]) for s in samples]
    as_ = [clamp_va(s[2]) for s in samples]
    n = len(samples)
    mv, ma = sum(vs) / n, sum(as_) / n
    sv = math.sqrt(sum((v - mv) ** 2 for v in vs) / n)
    sa = math.sqrt(sum((a - ma) ** 2 for a in as_) / n)
    return TrackSummary(
        n=n,
        span_s=max(0.0, ts[-1] - ts[0]),
        valence=vs[-1],
        arousal=as_[-1],
        mean_valence=mv,
        mean_arousal=ma,
        trend_valence=_slope(ts, vs),
        trend_arousal=_slope(ts, as_),
        spread_valence=sv,
        spread_arousal=sa,
    )


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
