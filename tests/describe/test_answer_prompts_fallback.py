"""Answer validation, prompt content, and the deterministic fallback."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest

from streamer.describe.answer import ANSWER_SCHEMA, parse_answer
from streamer.describe.fallback import fallback_answer, intensity_word
from streamer.describe.prompts import (
    SYSTEM_PROMPT,
    TrackSummary,
    build_messages,
    is_text_only,
    summarize,
)
from streamer.describe.taxonomy import BASIC, COMPLEX, nearest_basic, nearest_complex
from streamer.errors import InvalidAnswerError

GOOD = {"basic": "happiness", "complex": ["pleasure"], "description": "A smile."}


def test_schema_lists_the_vocabularies() -> None:
    assert len(BASIC) == 7 and len(COMPLEX) == 26
    assert ANSWER_SCHEMA["properties"]["basic"]["enum"] == list(BASIC)
    assert ANSWER_SCHEMA["properties"]["complex"]["items"]["enum"] == list(COMPLEX)


@pytest.mark.parametrize(
    ("obj", "basic", "complex_"),
    [
        (GOOD, "happiness", ("pleasure",)),
        ({**GOOD, "basic": " Happy "}, "happiness", ("pleasure",)),
        ({**GOOD, "complex": "Doubt / Confusion"}, "happiness", ("doubt/confusion",)),
        ({**GOOD, "complex": ["peace", "Peace", "fatigue"]}, "happiness", ("peace", "fatigue")),
    ],
)
def test_valid_answers_are_normalised(
    obj: dict[str, Any], basic: str, complex_: tuple[str, ...]
) -> None:
    ans = parse_answer(json.dumps(obj))
    assert ans.basic == basic and ans.complex == complex_ and ans.text == "A smile."


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "blank"),
        ("   \n", "blank"),
        ("The person is happy.", "not JSON"),
        ('{"basic": "happiness"', "not JSON"),
        ("[1, 2]", "schema"),
        (json.dumps({**GOOD, "basic": "elated"}), "basic"),
        (json.dumps({**GOOD, "complex": []}), "complex"),
        (json.dumps({**GOOD, "complex": ["bliss"]}), "complex"),
        (json.dumps({**GOOD, "description": "   "}), "description"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "description"}), "schema"),
        (json.dumps({**GOOD, "image": "..."}), "schema"),
    ],
)
def test_invalid_answers_raise(text: str, match: str) -> None:
    with pytest.raises(InvalidAnswerError, match=match):
        parse_answer(text)


def test_summary_of_a_trajectory() -> None:
    samples = [(i * 0.1, 0.1 * i, -0.05 * i) for i in range(11)]  # 1 s, linear
    s = summarize(samples)
    assert s.n == 11 and s.span_s == pytest.approx(1.0)
    assert (s.valence, s.arousal) == pytest.approx((1.0, -0.5))
    assert s.mean_valence == pytest.approx(0.5) and s.mean_arousal == pytest.approx(-0.25)
    assert s.trend_valence == pytest.approx(1.0) and s.trend_arousal == pytest.approx(-0.5)
    assert s.spread_valence > 0
    nan = summarize([(0.0, math.nan, 7.0)])
    assert (nan.valence, nan.arousal) == (0.0, 1.0)
    with pytest.raises(ValueError):
        summarize([])


def test_prompt_has_numbers_convention_and_no_image() -> None:
    msgs = build_messages(summarize([(0.0, 0.2, 0.1), (2.0, 0.6, 0.3)]))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[-1, 1]" in SYSTEM_PROMPT and "Valence -1 is very unpleasant" in SYSTEM_PROMPT
    user = msgs[1]["content"]
    assert "Current: valence +0.60, arousal +0.30" in user
    assert "Trend per second: valence +0.20, arousal +0.10" in user
    assert all(is_text_only(m["content"]) for m in msgs)
    assert "valence +0.50" in build_messages(TrackSummary.point(0.5, 0.0))[1]["content"]


def test_text_only_check_catches_image_data() -> None:
    png_b64 = base64.b64encode(bytes(range(256)) * 2).decode()
    assert not is_text_only(f"valence +0.5 {png_b64}")
    assert not is_text_only("valence \x00\x89PNG")
    assert not is_text_only(
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAA"
    )
    assert is_text_only("Current: valence +0.60, arousal -0.30. doubt/confusion")


@pytest.mark.parametrize(
    ("v", "a", "basic", "words"),
    [
        (0.0, 0.05, "neutral", "A neutral, composed expression"),
        (0.8, 0.4, "happiness", "Strongly pleasant and energised"),
        (0.5, -0.3, "happiness", "Moderately pleasant and calm"),
        (-0.7, 0.6, "anger", "Strongly unpleasant and tense"),
        (-0.6, -0.4, "sadness", "Moderately unpleasant and subdued"),
        (0.2, 0.7, "surprise", "Moderately pleasant and energised"),
        (-0.25, 0.2, "disgust", "Slightly unpleasant and tense"),
    ],
)
def test_fallback_table(v: float, a: float, basic: str, words: str) -> None:
    ans = fallback_answer(TrackSummary.point(v, a))
    assert ans.basic == basic
    assert ans.text.startswith(words)
    assert f"valence {v:+.2f}, arousal {a:+.2f}" in ans.text
    assert len(ans.complex) == 3 and set(ans.complex) <= set(COMPLEX)
    assert ans == fallback_answer(TrackSummary.point(v, a))  # deterministic


def test_fallback_mentions_trend_and_intensity_grows() -> None:
    s = summarize([(0.0, 0.0, 0.0), (1.0, 0.5, 0.0)])
    assert "valence rising" in fallback_answer(s).text
    assert [intensity_word(r, 0) for r in (0.1, 0.3, 0.6, 0.9)] == [
        "neutral",
        "slightly",
        "moderately",
        "strongly",
    ]
    assert nearest_basic(0.05, -0.05) == "neutral"
    assert nearest_complex(-0.3, -0.8, 1) == ("fatigue",)
