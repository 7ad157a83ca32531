"""Cluster mode: every camera runs the live pipeline as a Ray actor (optional extra).

See ``docs/cluster.md``. Modules: ``config`` (the ``cluster:`` section, no Ray needed),
``lease`` (one publishing actor per camera), ``actor`` (the camera actor), ``driver``
(start, watch and stop the actors), ``status`` (``streamer cluster status``).
"""

from __future__ import annotations

import importlib

from streamer.errors import ClusterError, ConfigError


def require_ray() -> None:
    """Raise a :class:`ConfigError` naming the extra when Ray is not installed."""
    try:
        importlib.import_module("ray")
    except ImportError as err:
        raise ConfigError("cluster mode needs Ray: pip install 'streamer[cluster]'") from err


__all__ = ["ClusterError", "require_ray"]
