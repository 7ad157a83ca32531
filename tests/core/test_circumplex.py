"""The one circumplex rule, at its boundaries, and every user of it agreeing."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from streamer.circumplex import NEUTRAL_RADIUS, Quadrant, intensity_word, quadrant
from streamer.describe.fallback import fallback_answer
from streamer.messages import VASample
from streamer.publish.payloads import Topics, encode_message
from streamer.publish.subscriber import SubscriberView
from streamer.summary import Summarizer, TrackSummary, summarize

JUST = 1e-5  # either side of a boundary (payloads keep 6 decimals)

CASES = [
    # the disagreement that the one table removes: 0.18 from the origin is neutral
    (0.15, 0.10, Quadrant.NEUTRAL),
    (0.0, 0.0, Quadrant.NEUTRAL),
    (0.05, -0.05, Quadrant.NEUTRAL),
    # the neutral circle: inside is neutral, on and outside it is a quadrant
    (NEUTRAL_RADIUS - JUST, 0.0, Quadrant.NEUTRAL),
    (NEUTRAL_RADIUS, 0.0, Quadrant.EXCITED),
    (0.0, NEUTRAL_RADIUS, Quadrant.EXCITED),
    (0.0, -NEUTRAL_RADIUS, Quadrant.CALM),
    (-NEUTRAL_RADIUS, 0.0, Quadrant.TENSE),
    (-NEUTRAL_RADIUS, -JUST, Quadrant.SAD),
    (0.2 / math.sqrt(2) - JUST, 0.2 / math.sqrt(2) - JUST, Quadrant.NEUTRAL),
    (0.15, 0.15, Quadrant.EXCITED),
    # signs: zero counts as positive
    (0.5, 0.5, Quadrant.EXCITED),
    (0.5, -0.5, Quadrant.CALM),
    (-0.5, 0.5, Quadrant.TENSE),
    (-0.5, -0.5, Quadrant.SAD),
    (-1.0, 0.0, Quadrant.TENSE),
    (1.0, -JUST, Quadrant.CALM),
    (-JUST, 1.0, Quadrant.TENSE),
    (-1.0, -1.0, Quadrant.SAD),
]


@pytest.mark.parametrize(("v", "a", "expected"), CASES)
def test_quadrant_naming(v: float, a: float, expected: Quadrant) -> None:
    assert quadrant(v, a) is expected


@pytest.mark.parametrize(("v", "a", "expected"), CASES)
def test_every_user_names_the_same_quadrant(v: float, a: float, expected: Quadrant) -> None:
    # the run summary
    sample = VASample("cam", 0, 0.0, 1, (0.0, 0.0, 1.0, 1.0), v, a, v, a, (0.1, 0.1), "m")
    summ = Summarizer()
    summ.add(sample)
    assert summ.tracks[("cam", 1)].dominant_quadrant == expected.value
    # the fallback description: neutral words exactly when the quadrant is neutral
    text = fallback_answer(TrackSummary.point(v, a)).text
    assert text.startswith("A neutral") == (expected is Quadrant.NEUTRAL)
    # streamer subscribe's table
    view = SubscriberView("p")
    out = encode_message(sample, Topics("p"))
    assert view.handle(out.topic, out.payload) is not None
    console = Console(record=True, width=200)
    console.print(view.render())
    assert f" {expected.value} " in console.export_text()


@pytest.mark.parametrize(
    ("r", "word"),
    [
        (0.0, "neutral"),
        (NEUTRAL_RADIUS - JUST, "neutral"),
        (NEUTRAL_RADIUS, "slightly"),
        (0.45 - JUST, "slightly"),
        (0.45, "moderately"),
        (0.75 - JUST, "moderately"),
        (0.75, "strongly"),
        (1.0, "strongly"),
    ],
)
def test_intensity_words_at_their_boundaries(r: float, word: str) -> None:
    assert intensity_word(r, 0.0) == word
    assert intensity_word(0.0, -r) == word


def test_run_summary_agrees_with_the_window_summary() -> None:
    samples = [(0.1 * i, 0.05 * i - 0.3, 0.5 - 0.02 * i) for i in range(30)]
    summ = Summarizer()
    for i, (t, v, a) in enumerate(samples):
        summ.add(VASample("cam", i, t, 7, (0.0, 0.0, 1.0, 1.0), v, a, v, a, (0.1, 0.1), "m"))
    run = summ.tracks[("cam", 7)]
    window = summarize(samples)
    assert run.n == window.n == 30
    assert run.dominant_quadrant == window.dominant_quadrant
    for name in (
        "span_s",
        "valence",
        "arousal",
        "mean_valence",
        "mean_arousal",
        "trend_valence",
        "trend_arousal",
        "spread_valence",
        "spread_arousal",
        "first_t",
    ):
        assert getattr(run, name) == pytest.approx(getattr(window, name), abs=1e-9), name
