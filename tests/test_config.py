"""Config loading: strict keys, bounds, and errors that name the key and its YAML line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from streamer.config import AppConfig, load_config, parse_config
from streamer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "faces:\n  detector:\n    scor_threshold: 0.5\n",
            ":3: faces.detector.scor_threshold: unknown key",
        ),
        ("faces:\n  detector:\n    score_threshold: 7\n", ":3: faces.detector.score_threshold"),
        (
            "cameras:\n  - name: a\n    url: x\n    colour: red\n",
            ":4: cameras.0.colour: unknown key",
        ),
        ("smoothing:\n  measurement_noise: -1\n", ":2: smoothing.measurement_noise"),
        ("cameras:\n  - {name: a, url: x}\n  - {name: a, url: y}\n", "used twice"),
        ("- just\n- a list\n", "expected a mapping"),
        ("faces: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("cfg.yaml")


def test_empty_config_is_the_embedded_default() -> None:
    assert parse_config("", "empty.yaml") == AppConfig()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_example_configs_validate(path: Path) -> None:
    load_config(path)


def test_validate_config_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("affect:\n  max_batch: 0\n  colour: red\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "validate-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{bad}:2: affect.max_batch" in proc.stderr
    assert f"{bad}:3: affect.colour: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text("faces:\n  detector:\n    detect_every_n_frames: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "validate-config", str(good)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_cameras_analysis_rate_is_its_own_else_the_default() -> None:
    cfg = parse_config(
        "analysis: {fps: 5}\n"
        "cameras:\n"
        "  - {name: hall, url: rtsp://h/x}\n"
        "  - {name: desk, url: rtsp://d/x, analysis_fps: 10}\n"
        "  - {name: door, url: rtsp://o/x, analysis_fps: 0}\n"
    )
    assert [cfg.analysis_fps(c) for c in ("hall", "desk", "door", "a_replay")] == [
        5.0,
        10.0,
        None,  # 0: every frame, whatever the default
        5.0,
    ]
    assert AppConfig().analysis_fps("hall") is None  # unset: every frame, as before


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("analysis: {fps: 0}\n", "analysis.fps"),
        ("cameras:\n  - {name: a, url: x, analysis_fps: -1}\n", "cameras.0.analysis_fps"),
        ("faces:\n  detector: {idle_detect_every_s: 0}\n", "faces.detector.idle_detect_every_s"),
    ],
)
def test_bad_analysis_rates_name_their_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        parse_config(text, "cfg.yaml")


def test_compose_sample_config_wires_the_stack_by_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config/config.yaml (mounted by compose.yaml) is valid, names the compose services
    as its hosts, and every secret it reads comes from the environment compose passes."""
    import yaml

    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    env = services["streamer"]["environment"]
    text = (REPO / "config" / "config.yaml").read_text()
    monkeypatch.setenv("STREAMER_WEB_TOKEN", "t" * 32)
    cfg = load_config(REPO / "config" / "config.yaml")
    assert cfg.mqtt is not None and cfg.mqtt.host in services
    assert cfg.llm is not None
    assert urlsplit(getattr(cfg.llm, "host", "")).hostname in services
    assert cfg.web is not None and cfg.web.port == 8080
    assert any(p.endswith(":8080") for p in services["streamer"]["ports"])
    wanted = set(re.findall(r"\$\{(\w+)\}", text)) | {cfg.web.token_env}
    assert wanted <= set(env), wanted - set(env)
    assert any(v.endswith(":/config:ro") for v in services["streamer"]["volumes"])
