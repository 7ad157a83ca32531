"""Plugin discovery: one mechanism for the runtime and LLM-provider registries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from streamer.affect.runtimes import RuntimeConfigBase, RuntimePlugin, runtime_plugins
from streamer.describe.providers import provider_plugins
from streamer.plugins import check_key_default, discover


class _Cfg(RuntimeConfigBase):
    type: Literal["mine"] = "mine"


def test_both_registries_find_their_plugins() -> None:
    assert {"onnx", "torch", "tensorrt"} <= set(runtime_plugins())
    assert {"ollama", "llamacpp"} <= set(provider_plugins())


def test_a_config_whose_key_disagrees_is_refused() -> None:
    check_key_default("mine", _Cfg, "type")
    with pytest.raises(ValueError, match=r"_Cfg.type defaults to 'mine'; expected 'other'"):
        RuntimePlugin("other", _Cfg, lambda cfg, src: None)  # type: ignore[arg-type,return-value]


@dataclass(frozen=True)
class _Thing:
    key: str


def _package(root: Path, name: str, modules: dict[str, str]) -> str:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, body in modules.items():
        (pkg / f"{mod}.py").write_text(body)
    return str(pkg)


def test_discover_collects_plugins_of_the_kind_and_refuses_a_key_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    header = f"from {__name__} import _Thing\n"
    path = _package(
        tmp_path,
        "plugpkg_ok",
        {"a": header + "PLUGIN = _Thing('a')\n", "b": "PLUGIN = 'not a plugin'\n", "c": ""},
    )
    assert discover("plugpkg_ok", [path], _Thing) == {"a": _Thing("a")}
    path = _package(
        tmp_path,
        "plugpkg_twice",
        {"a": header + "PLUGIN = _Thing('x')\n", "b": header + "PLUGIN = _Thing('x')\n"},
    )
    with pytest.raises(ValueError, match="'x' is registered twice"):
        discover("plugpkg_twice", [path], _Thing)
