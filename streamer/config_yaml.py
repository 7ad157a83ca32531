"""Bounded YAML reading for config files: hostile input fails fast with one line.

A config file is small and shallow. Anything else is refused before it can cost memory
or time:

- the file is read up to :data:`MAX_CONFIG_BYTES` (a bigger file, even comments only,
  is refused without reading it all);
- collections nest at most :data:`MAX_DEPTH` deep (checked on the parser's event stream,
  which is iterative, before the recursive composer runs);
- aliases may share data, but the document expanded in full may hold at most
  :data:`MAX_EXPANDED_NODES` nodes (a "billion laughs" alias bomb is refused while
  counting, never expanded);
- a key given twice in one mapping is an error naming both lines.

Every error is a :class:`~streamer.errors.ConfigError` whose message is one line that
starts with ``FILE`` or ``FILE:LINE``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from streamer.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 100_000
MAX_EVENTS = 200_000

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_config_text(path: Path) -> str:
    """The text of a config file, read at most up to the size limit.

    Pipes work (``--config <(envsubst < cfg.yaml)``); an endless device such as
    ``/dev/zero`` is refused as too large after reading the limit.
    """
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"{path}: config file too large ({st.st_size} bytes; the limit is "
                    f"{MAX_CONFIG_BYTES})"
                )
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file not found") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{path}: is a directory, not a config file") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror or err}") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file too large (the limit is {MAX_CONFIG_BYTES} bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from err


def _yaml_error(err: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark else source
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ConfigError(f"{where}: not valid YAML: {problem}")


def _at(source: str, event: yaml.Event) -> str:
    mark = event.start_mark
    return f"{source}:{mark.line + 1}" if mark is not None else source


def _check_events(text: str, source: str) -> None:
    """Depth and size limits on the event stream (no recursion, no expansion)."""
    depth = 0
    for n, event in enumerate(yaml.parse(text, Loader=_Loader)):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"{_at(source, event)}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if n > MAX_EVENTS:
            raise ConfigError(f"{_at(source, event)}: more than {MAX_EVENTS} YAML elements")


def _measure(
    node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]], busy: set[int], source: str
) -> tuple[int, int]:
    """(node count, height) of ``node`` with every alias expanded; stops past the limits."""
    line = node.start_mark.line + 1
    key = id(node)
    if key in busy:
        raise ConfigError(f"{source}:{line}: an alias refers to itself")
    if key not in memo:
        busy.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [c for pair in node.value for c in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        size, height = 1, 1
        for child in children:
            child_size, child_height = _measure(child, depth + 1, memo, busy, source)
            size += child_size
            height = max(height, child_height + 1)
            if size > MAX_EXPANDED_NODES:
                raise ConfigError(
                    f"{source}:{line}: aliases expand to more than {MAX_EXPANDED_NODES} "
                    "elements (alias bomb?)"
                )
        busy.discard(key)
        memo[key] = (size, height)
    if depth + memo[key][1] > MAX_DEPTH:
        raise ConfigError(f"{source}:{line}: nested deeper than {MAX_DEPTH} levels through aliases")
    return memo[key]


def _check_duplicates(node: yaml.Node, seen: set[int], source: str) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    raise ConfigError(
                        f"{source}:{line}: duplicate key {key_node.value!r} "
                        f"(first given on line {first[key_node.value]})"
                    )
                first[key_node.value] = line
            _check_duplicates(key_node, seen, source)
            _check_duplicates(value_node, seen, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, seen, source)


def load_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document within the limits; returns (data, root node)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: config too large (the limit is {MAX_CONFIG_BYTES} bytes)")
    try:
        _check_events(text, source)
        root = yaml.compose(text, Loader=_Loader)
        if root is not None:
            _measure(root, 0, {}, set(), source)
            _check_duplicates(root, set(), source)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise _yaml_error(err, source) from err
    except RecursionError as err:  # pragma: no cover - the depth check comes first
        raise ConfigError(f"{source}: nested too deeply") from err
    return data, root
