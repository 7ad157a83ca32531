"""The one error tree: every exception the package defines is drawn in errors.py and
derives from StreamerError (so the CLI prints one line and callers catch them all)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re

import pytest

import streamer
from streamer import errors
from streamer.errors import StreamerError

# modules that need an optional extra at import time: skipped when it is absent (the
# others import their extras lazily, so the walk covers them on the default install)
OPTIONAL = {"streamer.affect.torch_models": "torch"}
NOT_IMPORTED = {"streamer.__main__"}  # runs the command line when imported


def _needs(name: str) -> str | None:
    for prefix, module in OPTIONAL.items():
        if (name == prefix or name.startswith(prefix + ".")) and importlib.util.find_spec(
            module
        ) is None:
            return module
    return None


def _package_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(streamer.__path__, "streamer."):
        if info.name in NOT_IMPORTED or _needs(info.name) is not None:
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("streamer."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def _drawn() -> set[str]:
    """The class names in errors.py's tree drawing."""
    doc = errors.__doc__ or ""
    tree = doc.split("::", 1)[1].split("\n\n", 2)[1]  # the indented block after "::"
    return set(re.findall(r"^\s*(?:[│ ]*[├└]── )?([A-Z]\w+)\s", tree, re.M))


def test_the_walk_finds_the_whole_tree() -> None:
    found = _package_exceptions()
    assert len(found) >= 20  # the walk really imports the package, modules included
    assert "streamer.errors.ClusterError" in found


def test_every_exception_is_drawn_and_derives_from_streamer_error() -> None:
    drawn = _drawn()
    for qualname, cls in _package_exceptions().items():
        assert cls.__module__ == "streamer.errors", f"{qualname} is defined outside errors.py"
        assert issubclass(cls, StreamerError), f"{qualname} does not derive from StreamerError"
        assert cls.__name__ in drawn, f"{qualname} is not drawn in errors.py's docstring"


def test_the_drawing_names_only_real_classes() -> None:
    defined = {name for name, obj in vars(errors).items() if isinstance(obj, type)}
    assert _drawn() <= defined


@pytest.mark.parametrize("module", sorted(OPTIONAL))
def test_optional_modules_are_walked_when_their_extra_is_there(module: str) -> None:
    missing = _needs(module)
    if missing is not None:
        pytest.skip(f"optional package {missing!r} is not installed")
    importlib.import_module(module)
