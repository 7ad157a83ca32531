"""The runtime: what runs the pipeline, beside it (the CLI only parses and reports).

* :mod:`streamer.runtime.replay` — :func:`run_replay`: a recorded file, every frame,
  deterministic outputs (``streamer replay`` and every bench that replays).
* :mod:`streamer.runtime.live` — :func:`run_live` / :func:`run_until_stopped`: live
  cameras, each supervised (restart on failure or hang, restart-storm guard), until
  stopped by a signal, a duration or the caller (``streamer run``, cluster actors).
* :mod:`streamer.runtime.loop` — the one event-loop bootstrap of live runs.
"""

from __future__ import annotations
