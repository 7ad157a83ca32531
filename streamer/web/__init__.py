"""Views of a run: the live dashboard, ``/api/state``, Prometheus ``/metrics`` and health.

The server lives in :mod:`streamer.web.server` (imported only when the ``web:`` section
is enabled); :mod:`streamer.web.config` is its config section.
"""
