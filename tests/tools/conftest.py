"""Fixtures of the tools tests: the evaluation tool as a module."""

from __future__ import annotations

from types import ModuleType

import pytest

from tools import evaluate


@pytest.fixture(scope="session")
def evaluate_tool() -> ModuleType:
    """``tools/evaluate.py`` as a module (its ``main(argv)`` returns the exit code)."""
    return evaluate
