"""Runtimes are plugins: key, config and factory declared together; YAML reaches each."""

from __future__ import annotations

from typing import Literal, cast

import pytest

from streamer.affect.runtimes import (
    ModelSource,
    Runtime,
    RuntimeConfigBase,
    RuntimePlugin,
    make_runtime,
    runtime_plugins,
)
from streamer.config import parse_config
from streamer.errors import ConfigError, ModelError


def test_builtin_runtimes_are_registered() -> None:
    assert {"onnx", "tensorrt", "torch"} <= set(runtime_plugins())


@pytest.mark.parametrize("key", sorted(runtime_plugins()))
def test_every_registered_runtime_is_reachable_from_yaml(key: str) -> None:
    cfg = parse_config(f"affect:\n  runtime:\n    type: {key}\n")
    assert type(cfg.affect.runtime) is runtime_plugins()[key].config


def test_unknown_runtime_type_names_the_line_and_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("affect:\n  runtime:\n    type: quantum\n", "c.yaml")
    text = str(info.value)
    assert "c.yaml:" in text and "quantum" in text and "'onnx'" in text


def test_a_runtime_field_of_another_runtime_is_refused() -> None:
    with pytest.raises(ConfigError, match="intra_op_threads"):
        parse_config("affect:\n  runtime: {type: torch, intra_op_threads: 2}\n")


class _MineConfig(RuntimeConfigBase):
    type: Literal["mine"] = "mine"


def _create(cfg: _MineConfig, source: ModelSource) -> Runtime:
    raise AssertionError("never called: these tests only register the plugin")


def test_plugin_key_must_match_its_config_type() -> None:
    RuntimePlugin("mine", _MineConfig, _create)
    with pytest.raises(ValueError, match="expected 'other'"):
        RuntimePlugin("other", _MineConfig, _create)


def test_make_runtime_refuses_an_unregistered_type() -> None:
    with pytest.raises(ModelError, match="unknown runtime 'mine'"):
        make_runtime(_MineConfig(), cast(ModelSource, None))


def test_predict_runtime_flag_takes_every_registered_runtime() -> None:
    from argparse import Namespace

    from streamer.affect.config import AffectConfig
    from streamer.cli.predict import affect_config

    for key in runtime_plugins():
        args = Namespace(model=None, weights=None, runtime=key)
        assert affect_config(AffectConfig(), args).runtime.type == key
    bad = Namespace(model=None, weights=None, runtime="quantum")
    with pytest.raises(ConfigError, match="quantum"):
        affect_config(AffectConfig(), bad)
