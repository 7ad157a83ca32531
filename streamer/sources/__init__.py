"""Video sources: the first stage of the pipeline.

* :mod:`streamer.sources.file` — recorded files for replay (every frame, in order).
* :mod:`streamer.sources.live` — cameras: RTSP, HTTP(S)/HLS, V4L2 webcams, and files
  played like cameras; watchdog, reconnect with backoff, latest-frame-wins hand-off.
* :mod:`streamer.sources.redact` — credentials out of URLs before anything is logged.
* :mod:`streamer.testing.sources` — real RTSP/TCP servers and clips for tests/benches.

Submodules are imported explicitly (this package stays light: the config imports
:mod:`streamer.sources.config` without pulling in PyAV).
"""
