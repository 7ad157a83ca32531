"""Episode rules on synthetic trajectories: start, hysteresis, unsure samples, endings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from streamer.episodes.config import EpisodesConfig, MoodConfig
from streamer.episodes.mood import MoodTracker
from streamer.episodes.rules import EpisodeEngine
from streamer.messages import Episode, Mood, TrackEvent, TrackEventKind, VASample

FPS = 10.0
SURE = (0.01, 0.01)  # filter variance of a settled track
UNSURE = (0.3, 0.3)  # above the default max_variance (0.05)


def sample(
    i: int,
    valence: float,
    arousal: float = 0.0,
    *,
    track: int = 1,
    camera: str = "cam",
    variance: tuple[float, float] = SURE,
    measured: bool = True,
) -> VASample:
    raw = valence if measured else None
    return VASample(
        camera, i, i / FPS, track, (0, 0, 10, 10), valence, arousal, raw,
        arousal if measured else None, variance, "test",
    )  # fmt: skip


def lost(i: int, track: int = 1, reason: str | None = None, camera: str = "cam") -> TrackEvent:
    return TrackEvent(camera, track, TrackEventKind.LOST, i, i / FPS, reason=reason)


def rules(*specs: dict[str, object]) -> EpisodesConfig:
    return EpisodesConfig.model_validate({"rules": list(specs)})


DISTRESS = {"name": "distress", "when": {"valence_below": -0.4}, "for_s": 1.0}


def run(cfg: EpisodesConfig, valences: Sequence[float | None], **kw: object) -> list[Episode]:
    """Feed one track; None is a frame whose measurement was rejected (unsure)."""
    eng = EpisodeEngine(cfg)
    out: list[Episode] = []
    for i, v in enumerate(valences):
        if v is None:
            out += eng.on_sample(sample(i, 0.0, measured=False))
        else:
            out += eng.on_sample(sample(i, v, **kw))  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class Case:
    name: str
    valences: Sequence[float | None]
    # (state, decision frame, t_start, t_end or None, reason or None)
    expected: list[tuple[str, int, float, float | None, str | None]]


LOW, OK = -0.6, 0.0
CASES = [
    Case("starts after exactly for_s", [OK] * 3 + [LOW] * 15, [("started", 13, 0.3, None, None)]),
    Case("no start on a shorter excursion", [OK] * 3 + [LOW] * 10 + [OK] * 10, []),
    Case(
        "ends after clear_after_s of false",
        [LOW] * 12 + [OK] * 12,
        [("started", 10, 0.0, None, None), ("ended", 22, 0.0, 1.2, "cleared")],
    ),
    Case(
        "noise around the threshold does not flap",
        [LOW] * 12 + [OK, LOW, OK, OK, LOW, OK, LOW, LOW, OK, LOW] * 3,
        [("started", 10, 0.0, None, None)],
    ),
    Case(
        "unsure samples neither start nor end",
        [LOW] * 5 + [None] * 20 + [LOW] + [None] * 30,
        [("started", 25, 0.0, None, None)],
    ),
    Case(
        "unsure samples do not clear an episode",
        [LOW] * 12 + [None] * 40 + [LOW],
        [("started", 10, 0.0, None, None)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_table(case: Case) -> None:
    cfg = rules({**DISTRESS, "clear_after_s": 1.0})
    got = [(e.state, e.frame, e.t_start, e.t_end, e.reason) for e in run(cfg, case.valences)]
    assert got == case.expected


def test_high_variance_is_unsure() -> None:
    cfg = rules(DISTRESS)
    assert run(cfg, [LOW] * 30, variance=UNSURE) == []
    assert len(run(cfg, [LOW] * 30)) == 1


def test_several_rules_on_one_track_with_stats() -> None:
    cfg = rules(
        DISTRESS,
        {"name": "tense", "when": {"valence_below": 0.0, "arousal_above": 0.5}, "for_s": 0.5},
    )
    eng = EpisodeEngine(cfg)
    out: list[Episode] = []
    for i in range(20):
        out += eng.on_sample(sample(i, -0.5 - i * 0.01, 0.6))
    out += eng.on_lost(lost(25))
    assert [(e.rule, e.state) for e in out] == [
        ("tense", "started"),
        ("distress", "started"),
        ("distress", "ended"),
        ("tense", "ended"),
    ]
    ended = {e.rule: e for e in out if e.state == "ended"}
    d = ended["distress"]
    assert d.reason == "track_lost" and d.t_end == pytest.approx(1.9) and d.t == 2.5
    assert d.valence.max == pytest.approx(-0.5) and d.valence.min == pytest.approx(-0.69)
    assert d.arousal.mean == pytest.approx(0.6)
    assert d.id == "cam:1:distress:0" and ended["tense"].id == "cam:1:tense:0"


def test_track_lost_mid_episode_and_other_track_unaffected() -> None:
    eng = EpisodeEngine(rules(DISTRESS))
    out: list[Episode] = []
    for i in range(15):
        out += eng.on_sample(sample(i, LOW, track=1))
        out += eng.on_sample(sample(i, LOW, track=2))
    out += eng.on_lost(lost(15, track=1))
    ended = [e for e in out if e.state == "ended"]
    assert [(e.track_id, e.reason) for e in ended] == [(1, "track_lost")]
    assert eng.open_count("cam", "distress") == 1
    out = eng.on_lost(lost(20, track=2, reason="end_of_stream"))
    assert [(e.track_id, e.reason, e.t_end) for e in out] == [(2, "end_of_stream", 1.4)]
    assert eng.open_count("cam", "distress") == 0


def test_lost_while_clearing_ends_where_the_condition_stopped() -> None:
    eng = EpisodeEngine(rules({**DISTRESS, "clear_after_s": 5.0}))
    for i in range(12):
        eng.on_sample(sample(i, LOW))
    for i in range(12, 15):
        eng.on_sample(sample(i, OK))
    (ep,) = eng.on_lost(lost(16))
    assert ep.t_end == pytest.approx(1.2) and ep.duration_s == pytest.approx(1.2)
    assert ep.valence.max == pytest.approx(LOW), "the clearing samples are not the episode"


def test_same_input_same_episodes() -> None:
    vals = [LOW if (i // 7) % 3 else OK for i in range(200)]
    a = [e.to_record() for e in run(rules({**DISTRESS, "for_s": 0.5}), vals)]
    b = [e.to_record() for e in run(rules({**DISTRESS, "for_s": 0.5}), vals)]
    assert a and a == b


def test_mood_every_interval_and_count_zero_when_empty() -> None:
    mood = MoodTracker(MoodConfig(interval_s=1.0))
    out: list[Mood] = []
    for i in range(25):
        out += mood.on_sample(sample(i, 0.5, 0.2, track=1))
        out += mood.on_sample(sample(i, -0.1, 0.4, track=2))
    assert [m.frame for m in out] == [0, 10, 20]
    m = out[1]
    assert m.count == 2 and m.valence == pytest.approx(0.2) and m.arousal == pytest.approx(0.3)
    assert m.valence_spread == pytest.approx(0.3) and m.quadrant == "excited"
    assert mood.on_lost(lost(30, track=1)) == []
    (empty,) = mood.on_lost(lost(31, track=2))
    assert (empty.count, empty.valence, empty.quadrant) == (0, None, "none")
    assert mood.on_lost(lost(32, track=3)) == [], "nothing more while nobody is tracked"


@pytest.mark.parametrize(
    "first",
    [
        sample(0, -0.3, 0.4, variance=(0.25, 0.25)),  # a new track: the filter's prior
        sample(0, -0.3, 0.4, measured=False),  # predicted only
    ],
    ids=["variance-0.25", "no-measurement"],
)
def test_first_mood_never_uses_an_unsure_sample(first: VASample) -> None:
    """A smiling face must not start as `tense` because of its track's first sample."""
    mood = MoodTracker(MoodConfig(interval_s=1.0), max_variance=0.05)
    out = mood.on_sample(first)
    for i in range(1, 5):
        out += mood.on_sample(sample(i, 0.8, 0.5))
    assert out, "a mood once the face is sure"
    assert [m.quadrant for m in out] == ["excited"]
    assert out[0].frame == 1 and out[0].valence == pytest.approx(0.8)


def test_mood_uses_the_rules_max_variance() -> None:
    from streamer.episodes.stage import EpisodeLogic

    rules_cfg = EpisodesConfig.model_validate(
        {"rules": [DISTRESS], "max_variance": 0.3}  # a lenient deployment
    )
    logic = EpisodeLogic(rules_cfg, MoodConfig(interval_s=1.0))
    out = logic.feed(sample(0, -0.3, 0.4, variance=(0.25, 0.25)))
    out += logic.feed(sample(1, 0.8, 0.5))
    assert [m.frame for m in out if isinstance(m, Mood)] == [0]  # 0.25 is sure there
