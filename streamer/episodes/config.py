"""Config of affect episodes (``episodes:``) and room mood (``mood:``).

    episodes:
      rules:
        - name: distress
          when: {valence_below: -0.4}
          for_s: 10
          clear_after_s: 3
    mood:
      enabled: true
      interval_s: 2

Semantics in docs/episodes.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from streamer.config_base import StrictModel
from streamer.errors import ConfigFieldError

RULE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class RuleCondition(StrictModel):
    """Thresholds on smoothed valence/arousal; every one given must hold."""

    valence_below: float | None = Field(
        None, ge=-1.0, le=1.0, description="holds while smoothed valence < this"
    )
    valence_above: float | None = Field(
        None, ge=-1.0, le=1.0, description="holds while smoothed valence > this"
    )
    arousal_below: float | None = Field(
        None, ge=-1.0, le=1.0, description="holds while smoothed arousal < this"
    )
    arousal_above: float | None = Field(
        None, ge=-1.0, le=1.0, description="holds while smoothed arousal > this"
    )

    @model_validator(mode="after")
    def _some_threshold(self) -> RuleCondition:
        if all(
            v is None
            for v in (
                self.valence_below,
                self.valence_above,
                self.arousal_below,
                self.arousal_above,
            )
        ):
            raise ValueError(
                "a rule needs at least one of valence_below, valence_above, arousal_below, "
                "arousal_above"
            )
        for name, lo, hi in (
            ("valence", self.valence_above, self.valence_below),
            ("arousal", self.arousal_above, self.arousal_below),
        ):
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(
                    f"{name}_above ({lo}) must be less than {name}_below ({hi}): "
                    "the rule could never hold"
                )
        return self

    def holds(self, valence: float, arousal: float) -> bool:
        """Whether every given threshold holds for (``valence``, ``arousal``)."""
        return (
            (self.valence_below is None or valence < self.valence_below)
            and (self.valence_above is None or valence > self.valence_above)
            and (self.arousal_below is None or arousal < self.arousal_below)
            and (self.arousal_above is None or arousal > self.arousal_above)
        )


class EpisodeRule(StrictModel):
    """One named rule: a condition that must hold for ``for_s`` media seconds."""

    name: str = Field(
        pattern=RULE_NAME_PATTERN,
        description="rule name (lower case letters, digits, _ and -): episode ids, MQTT "
        "and Home Assistant entities",
    )
    when: RuleCondition = Field(description="thresholds on smoothed valence/arousal")
    for_s: float = Field(
        gt=0.0, le=86400.0, description="media seconds the condition must hold to start"
    )
    clear_after_s: float = Field(
        1.0,
        ge=0.0,
        le=3600.0,
        description="media seconds the condition must be false to end an episode "
        "(hysteresis against flapping)",
    )


class EpisodesConfig(StrictModel):
    """Rules over each track's smoothed VA trajectory, evaluated in media time."""

    rules: list[EpisodeRule] = Field(min_length=1, description="the rules (at least one)")
    max_variance: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="a sample whose filter variance (valence or arousal) is above this is "
        "'unsure': it neither starts, extends nor ends an episode",
    )
    describe: bool = Field(
        True, description="ask the describer (when `llm` is set) for a sentence per ended episode"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> EpisodesConfig:
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ConfigFieldError(
                    f"rule name {rule.name!r} is used twice (first by rule {seen[rule.name]})",
                    ("rules", i, "name"),
                )
            seen[rule.name] = i
        return self


class MoodConfig(StrictModel):
    """Room mood: the tracked faces of a camera summarised every ``interval_s``."""

    enabled: bool = Field(True, description="publish the room mood")
    interval_s: float = Field(
        2.0, gt=0.0, le=3600.0, description="media seconds between two moods of a camera"
    )
