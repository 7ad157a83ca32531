"""``streamer validate-config``: several files in one run, every problem of each with its
line (unset environment variables too), NaN said as such, a duplicate at its own line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.config import validate_file

RULES = """\
episodes:
  rules:
    - name: calm
      when: {{valence_above: 0.2}}
      for_s: {for_s}
    - name: low
      when: {{valence_below: -0.4}}
      for_s: 2
    - name: {third}
      when: {{arousal_above: 0.4}}
      for_s: 2
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("for_s", "message"),
    [
        (".nan", "episodes.rules.0.for_s: not a number (.nan); expected a finite number"),
        (".NaN", "episodes.rules.0.for_s: not a number (.nan); expected a finite number"),
        (".inf", "episodes.rules.0.for_s: infinite (inf); expected a finite number"),
        ("-.inf", "episodes.rules.0.for_s: infinite (-inf); expected a finite number"),
    ],
)
def test_a_number_that_is_not_one_is_said_so(tmp_path: Path, for_s: str, message: str) -> None:
    path = _write(tmp_path / "c.yaml", RULES.format(for_s=for_s, third="high"))
    _, problems = validate_file(path)
    assert problems == [f"{path}:5: {message}"]


def test_a_duplicate_rule_name_is_reported_at_the_duplicate(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", RULES.format(for_s=1, third="calm"))
    _, problems = validate_file(path)
    assert problems == [
        f"{path}:9: episodes.rules.2.name: rule name 'calm' is used twice (first by rule 0)"
    ]


def test_several_files_every_problem_of_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("CAM_A_UNSET", "CAM_B_UNSET", "MQTT_PW_UNSET"):
        monkeypatch.delenv(name, raising=False)
    good = _write(tmp_path / "good.yaml", RULES.format(for_s=1, third="high"))
    two_values = _write(
        tmp_path / "values.yaml",
        "faces:\n  detector:\n    score_threshold: 7\n" + RULES.format(for_s=".nan", third="high"),
    )
    env = _write(
        tmp_path / "env.yaml",
        "cameras:\n"
        "  - name: a\n    url: rtsp://u:${CAM_A_UNSET}@10.0.0.1/s\n"
        "  - name: b\n    url: rtsp://${CAM_B_UNSET}:${CAM_A_UNSET}@10.0.0.2/s\n"
        "mqtt:\n  host: broker\n  username: u\n  password_env: MQTT_PW_UNSET\n"
        "  colour: red\n",  # a structure error too: the variables are still reported
    )
    assert main(["validate-config", str(good), str(two_values), str(env)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{good}: ok (0 camera(s))"]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {two_values}:3: faces.detector.score_threshold: Input should be less than "
        "or equal to 1",
        f"error: {two_values}:8: episodes.rules.0.for_s: not a number (.nan); expected a "
        "finite number",
        f"error: {env}:10: mqtt.colour: unknown key",
        f"error: {env}:3: cameras.0.url: environment variable CAM_A_UNSET is not set",
        f"error: {env}:5: cameras.1.url: environment variable CAM_B_UNSET is not set",
        f"error: {env}:5: cameras.1.url: environment variable CAM_A_UNSET is not set",
        f"error: {env}:9: mqtt.password_env: environment variable MQTT_PW_UNSET is not set",
    ]
    assert "2 of 3 file(s) have problems" in err
    assert "Traceback" not in err


def test_every_example_config_is_valid_with_its_variables_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = sorted(str(p) for p in Path("configs").glob("*.yaml"))
    for name in ("FRONT_DOOR_PASSWORD", "YARD_PASSWORD", "STREAMER_MQTT_PASSWORD"):
        monkeypatch.setenv(name, os.environ.get(name, "x"))
    assert main(["validate-config", *configs]) == 0, capsys.readouterr().err
    assert len(capsys.readouterr().out.splitlines()) == len(configs)
