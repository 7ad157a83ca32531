"""The examples in the package's docstrings run as written (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import streamer

NOT_IMPORTED = {"streamer.__main__"}  # runs the command line when imported


def _modules_with_examples() -> list[str]:
    root = Path(streamer.__path__[0])
    names = []
    for info in pkgutil.walk_packages(streamer.__path__, "streamer."):
        if info.name in NOT_IMPORTED:
            continue
        rel = Path(*info.name.split(".")[1:])
        path = root / rel / "__init__.py" if info.ispkg else root / rel.with_suffix(".py")
        if ">>>" in path.read_text(encoding="utf-8"):
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    assert {"streamer.bus", "streamer.sources.redact"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has '>>>' but doctest found no example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
