"""Real servers and media that the tests and the ``bench`` commands share.

Nothing here is used by the analyzer itself; it lives in the package because
``streamer bench live`` (and the other benches) run real servers on loopback:

* :mod:`streamer.testing.net` — ``free_port()`` on 127.0.0.1, outside the ephemeral range.
* :mod:`streamer.testing.sources` — GStreamer's RTSP server in a child process
  (:class:`RtspServer`), a TCP server that never answers, synthetic and corrupted clips.
* :mod:`streamer.testing.mqtt` — a mosquitto broker process and a TCP relay that can cut
  the network.
* :mod:`streamer.testing.ollama` — an HTTP server speaking the Ollama API with
  switchable failure modes.
"""
