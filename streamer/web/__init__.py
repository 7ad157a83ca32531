"""Views of a run: the live dashboard, ``/api/state``, Prometheus ``/metrics`` and health.

The server lives in :mod:`streamer.web.server` (imported only when the ``web:`` section
is enabled, through :func:`sink`); :mod:`streamer.web.config` is its config section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.sinks import SinkContext
    from streamer.web.server import WebSink


def sink(ctx: SinkContext) -> WebSink:
    """The web sink of a run whose config has an enabled ``web`` section
    (:data:`streamer.compose.SINKS`)."""
    from streamer.web.server import WebSink

    if ctx.cfg.web is None:
        raise ValueError("the web sink needs a web section")
    return WebSink(ctx.cfg.web, ctx.bus, ctx.view, linger_s=ctx.options.linger_s)
