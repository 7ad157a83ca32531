"""Application config: pydantic v2 models loaded from YAML.

Every section forbids unknown keys. :func:`load_config` reports validation errors with
the YAML line of the offending key, e.g.::

    configs/replay.yaml:7: faces.detector.scor_threshold: unknown key
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, model_validator

from streamer.affect.config import AffectConfig
from streamer.cluster.config import ClusterConfig
from streamer.config_base import StrictModel
from streamer.describe.config import LlmSection
from streamer.episodes.config import EpisodesConfig, MoodConfig
from streamer.errors import ConfigError, ConfigFieldError
from streamer.faces.config import FacesConfig
from streamer.history.config import HistoryConfig
from streamer.publish.config import MqttConfig
from streamer.sources.config import CameraConfig
from streamer.web.config import WebConfig

if TYPE_CHECKING:
    import yaml

logger = logging.getLogger(__name__)


class SmoothingConfig(StrictModel):
    """Per-track Kalman filter on (valence, arousal), constant-position model."""

    # Tuned on the project's clips with `streamer bench smoothing` (docs/episodes.md):
    # about 3x less frame-to-frame jitter than the raw model output, ~130 ms step lag.
    process_noise_per_s: float = Field(
        0.05,
        gt=0.0,
        description="variance added to each VA state per second (how fast true affect may move)",
    )
    measurement_noise: float = Field(0.05, gt=0.0, description="variance of one raw VA measurement")
    initial_variance: float = Field(0.25, gt=0.0, description="variance of a new track's state")


class OutputConfig(StrictModel):
    jsonl: Path | None = Field(None, description="write every record to this JSONL file")
    live_lossless_wait_s: float = Field(
        2.0,
        ge=0.0,
        le=60.0,
        description="live runs: how long a frame's results wait for a full lossless sink "
        "(the JSONL file) before they are dropped for it, counted and logged; replay "
        "always waits",
    )


class AppConfig(StrictModel):
    """The whole analyzer."""

    cameras: list[CameraConfig] = Field(default_factory=list, description="live sources")
    faces: FacesConfig = FacesConfig()
    affect: AffectConfig = AffectConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    output: OutputConfig = OutputConfig()
    mqtt: MqttConfig | None = Field(None, description="publish to MQTT when set")
    llm: LlmSection | None = Field(None, description="describe tracks with an LLM when set")
    episodes: EpisodesConfig | None = Field(
        None, description="affect episodes: rules over smoothed VA (docs/episodes.md)"
    )
    mood: MoodConfig | None = Field(None, description="room mood per camera (docs/episodes.md)")
    web: WebConfig | None = Field(
        None, description="serve the dashboard, /metrics and health checks when set"
    )
    history: HistoryConfig | None = Field(
        None,
        description="keep episodes, descriptions, moods, camera statuses and VA in a "
        "database (SQLite, or PostgreSQL for several machines; docs/history.md)",
    )
    cluster: ClusterConfig | None = Field(
        None, description="run each camera as an actor on a Ray cluster (docs/cluster.md)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _unique_camera_names(self) -> AppConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.name in seen:
                raise ValueError(f"camera name {cam.name!r} is used twice")
            seen.add(cam.name)
        if self.cluster is not None and self.mqtt is None:
            raise ValueError(
                "cluster mode needs an `mqtt:` section: the cameras publish to the broker"
            )
        if self.cluster is not None and self.history is not None and not self.history.postgres:
            raise ValueError(
                "cluster mode needs `history.url` (PostgreSQL): actors on other machines "
                "cannot share one SQLite file"
            )
        return self


def _key_lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Record the 1-based line of every mapping key / sequence item under ``node``."""
    import yaml  # with the YAML text: a run on the embedded defaults never loads PyYAML

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _key_lines(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _key_lines(item, (*path, i), out)


def _yaml_loc(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> tuple[Any, ...]:
    """``loc`` without the union tags pydantic inserts (``llm.ollama.host`` -> ``llm.host``)."""
    out: tuple[Any, ...] = ()
    for i, part in enumerate(loc):
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if (*out, part) not in lines and nxt is not None and (*out, nxt) in lines:
            continue  # a tag: the next part is the key the YAML has
        out = (*out, part)
    return out


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    # Pydantic locations may carry union tags; walk back to the nearest known prefix.
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _message(e: Any) -> str:
    """What one pydantic error says, in the config's words."""
    if e["type"] == "extra_forbidden":
        return "unknown key"
    if e["type"] == "finite_number":
        value = e.get("input")
        if isinstance(value, float) and math.isnan(value):
            return "not a number (.nan); expected a finite number"
        return f"infinite ({value!r}); expected a finite number"
    error = e.get("ctx", {}).get("error")
    if isinstance(error, ConfigFieldError):
        return str(error)
    return str(e["msg"])


def format_validation_error(
    err: ValidationError, source: str, lines: dict[tuple[Any, ...], int]
) -> str:
    """One line per problem: ``FILE:LINE: key.path: message``."""
    rows = []
    for e in err.errors():
        loc = tuple(e["loc"])
        error = e.get("ctx", {}).get("error")
        if isinstance(error, ConfigFieldError):
            loc = (*loc, *error.at)  # the key the validator named, below its model
        loc = _yaml_loc(loc, lines)
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_for(loc, lines)
        prefix = f"{source}:{line}" if line else source
        rows.append(f"{prefix}: {where}: {_message(e)}")
    return "\n".join(rows)


def _parse(text: str, source: str) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    """The YAML document (a mapping) and the line of every key in it."""
    from streamer.config_yaml import load_yaml

    data, root = load_yaml(text, source)  # bounded: size, depth, aliases, duplicates
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    lines: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _key_lines(root, (), lines)
    return data, lines


def parse_config(text: str, source: str = "<config>") -> AppConfig:
    """Parse YAML text into an :class:`AppConfig`; errors name key and line."""
    data, lines = _parse(text, source)
    try:
        return AppConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, lines)) from err


def load_config(path: str | Path) -> AppConfig:
    """Load and validate a YAML config file."""
    from streamer.config_yaml import read_config_text

    p = Path(path)
    text = read_config_text(p)
    return parse_config(text, str(p))


def _unset_variables(
    data: dict[str, Any], source: str, lines: dict[tuple[Any, ...], int]
) -> list[str]:
    """Environment variables the config names that are not set, one line each (read
    from the YAML itself, so they are found even when the structure has errors)."""
    from streamer.sources.config import env_references

    out = []

    def unset(loc: tuple[Any, ...], name: str) -> None:
        line = _line_for(loc, lines)
        where = ".".join(str(p) for p in loc)
        prefix = f"{source}:{line}" if line else source
        out.append(f"{prefix}: {where}: environment variable {name} is not set")

    cameras = data.get("cameras")
    for i, cam in enumerate(cameras if isinstance(cameras, list) else []):
        url = cam.get("url") if isinstance(cam, dict) else None
        if isinstance(url, str):
            for name in env_references(url):
                if name not in os.environ:
                    unset(("cameras", i, "url"), name)
    mqtt = data.get("mqtt")
    env = mqtt.get("password_env") if isinstance(mqtt, dict) else None
    if isinstance(env, str) and env not in os.environ:
        unset(("mqtt", "password_env"), env)
    return out


def validate_file(path: str | Path) -> tuple[AppConfig | None, list[str]]:
    """Check a config file as ``validate-config`` does: its structure and values (every
    problem pydantic finds) and the environment variables it names (every unset one).

    Returns:
        The config (None when its structure has errors) and the problems, one line
        each (``FILE:LINE: key: message``); no problem: an empty list.
    """
    from streamer.config_yaml import read_config_text

    p = Path(path)
    source = str(p)
    try:
        data, lines = _parse(read_config_text(p), source)
    except ConfigError as err:
        return None, str(err).splitlines()
    problems = _unset_variables(data, source, lines)
    try:
        cfg: AppConfig | None = AppConfig.model_validate(data)
    except ValidationError as err:
        cfg = None
        problems = format_validation_error(err, source, lines).splitlines() + problems
    return cfg, problems
