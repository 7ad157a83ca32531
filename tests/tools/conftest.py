"""Fixtures of the tools tests: the evaluation tool as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def evaluate_tool() -> ModuleType:
    """``tools/evaluate.py`` imported as a module (its ``main(argv)`` returns the exit code)."""
    return _load("streamer_tools_evaluate", ROOT / "tools" / "evaluate.py")
