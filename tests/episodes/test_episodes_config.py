"""Episode rules and mood in the config: bad rules fail with their YAML line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamer.config import parse_config
from streamer.errors import ConfigError

GOOD = """\
episodes:
  rules:
    - name: distress
      when: {valence_below: -0.4}
      for_s: 10
      clear_after_s: 3
    - name: agitation
      when: {arousal_above: 0.6}
      for_s: 2
mood:
  enabled: true
  interval_s: 2
"""


def test_the_documented_example_loads() -> None:
    cfg = parse_config(GOOD, "cfg.yaml")
    assert cfg.episodes is not None and cfg.mood is not None
    assert [r.name for r in cfg.episodes.rules] == ["distress", "agitation"]
    assert cfg.episodes.rules[1].clear_after_s == 1.0
    assert cfg.mood.interval_s == 2.0


RULE = "episodes:\n  rules:\n    - name: x\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (RULE + "      when: {valence_below: -0.4}\n      for_s: 1\n      colour: red\n",
         ":6: episodes.rules.0.colour: unknown key"),
        ("episodes:\n  rules: []\n", ":2: episodes.rules: List should have at least 1 item"),
        (RULE + "      when: {valence_below: -1.5}\n      for_s: 1\n",
         ":4: episodes.rules.0.when.valence_below: Input should be greater than or equal to -1"),
        (RULE + "      when: {arousal_above: 2}\n      for_s: 1\n",
         ":4: episodes.rules.0.when.arousal_above: Input should be less than or equal to 1"),
        (RULE + "      when: {valence_below: -0.4}\n      for_s: 0\n",
         ":5: episodes.rules.0.for_s: Input should be greater than 0"),
        (RULE + "      when: {valence_below: -0.4}\n      for_s: -2\n",
         ":5: episodes.rules.0.for_s: Input should be greater than 0"),
        (RULE + "      when: {}\n      for_s: 1\n",
         ":4: episodes.rules.0.when: Value error, a rule"),
        (RULE + "      when: {valence_above: 0.5, valence_below: 0.2}\n      for_s: 1\n",
         ":4: episodes.rules.0.when: Value error, valence_above (0.5) must be less than"),
        (RULE + "      when: {valence_blow: -0.4}\n      for_s: 1\n",
         ":4: episodes.rules.0.when.valence_blow: unknown key"),
        ("mood:\n  interval_s: 0\n", ":2: mood.interval_s: Input should be greater than 0"),
    ],
)  # fmt: skip
def test_bad_rules_name_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert expected in str(info.value)


def test_validate_config_cli_fails_on_bad_rule_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("for_s: 2", "for_s: 0"))
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "validate-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"{bad}:9: episodes.rules.1.for_s" in proc.stderr
