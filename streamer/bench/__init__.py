"""The benchmarks behind ``streamer bench``: one module per bench, each printing JSON.

* :mod:`~streamer.bench.harness` — what they share: timing, process CPU and memory,
  media lookup, decode-only runs, paired ratios, measured replays, the JSON output.
* :mod:`~streamer.bench.live_harness` — the live measurement of ``live``, ``cameras``
  and ``live --web`` (a real RTSP server, live sources, latency per VA sample).
* one module per bench: ``replay`` (with ``episode_load`` for ``--episode-load``),
  ``model``, ``live``, ``smoothing``, ``startup``, ``crowd``, ``cameras``, ``cluster``,
  ``soak``.

The benches live in the package (not beside it) because ``streamer bench`` is a
command of the installed tool: an operator measures their own machine with it. They use
the library's public names only (its runtime, composition and stages), never each
other, and no library module imports them (an import-linter contract).
"""
