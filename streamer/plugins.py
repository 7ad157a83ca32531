"""Plugin discovery: the one mechanism behind the runtime and LLM-provider registries.

A plugin is a module of a package that declares, in one place, ``PLUGIN = SomePlugin(key,
Config, factory)``. :func:`discover` imports every module of the package once and
returns the plugins by key; :func:`check_key_default` makes sure the config's
discriminator field defaults to the plugin's key, so YAML and the registry can never
disagree.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Protocol, TypeVar

from pydantic import BaseModel


class Plugin(Protocol):
    """What every plugin declares."""

    @property
    def key(self) -> str: ...


P = TypeVar("P", bound=Plugin)


def discover(package: str, path: Iterable[str], kind: type[P]) -> dict[str, P]:
    """Import every module of ``package`` and collect its ``PLUGIN`` of type ``kind``.

    Args:
        package: the package's dotted name (``__name__`` of its ``__init__``).
        path: the package's ``__path__``.
        kind: the plugin class; other ``PLUGIN`` values are ignored.

    Raises:
        ValueError: two modules register the same key.
    """
    plugins: dict[str, P] = {}
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        plugin = getattr(module, "PLUGIN", None)
        if isinstance(plugin, kind):
            if plugin.key in plugins:
                raise ValueError(f"{kind.__name__} key {plugin.key!r} is registered twice")
            plugins[plugin.key] = plugin
    return plugins


def check_key_default(key: str, config: type[BaseModel], field: str) -> None:
    """Raise ValueError unless ``config.<field>`` defaults to ``key``."""
    default = config.model_fields[field].default
    if default != key:
        raise ValueError(
            f"plugin {key!r}: {config.__name__}.{field} defaults to {default!r}; expected {key!r}"
        )
