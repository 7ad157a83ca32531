"""``streamer run --config FILE [--out FILE.jsonl]``: analyse live cameras until stopped.

The runtime (:mod:`streamer.runtime.live`) does the work; this command checks the
arguments, runs it (or the cluster driver with ``--cluster``), logs what each camera did
and exits. SIGINT/SIGTERM stop the run cleanly within about 5 s.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
from pathlib import Path

from streamer.cli.cluster import cluster_address
from streamer.config import AppConfig, load_config
from streamer.errors import ConfigError
from streamer.output import OutputFile
from streamer.runtime.live import RunResult, run_until_stopped, select_cameras
from streamer.runtime.loop import stuck_threads

logger = logging.getLogger(__name__)

EXIT_GRACE_S = 1.0  # how long stuck worker threads get before the process exits anyway (s)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="analyse live cameras (RTSP, HTTP, webcams) from a YAML config until stopped",
        description="Run the live pipeline over every camera in the config: faces, tracks, "
        "valence/arousal, smoothing, and MQTT / LLM when configured. Stops cleanly on "
        "SIGINT or SIGTERM.",
    )
    p.add_argument("--config", type=Path, required=True, help="YAML config with `cameras:`")
    p.add_argument(
        "--out", type=Path, help="also write JSON lines here (replay's records plus wall_time)"
    )
    p.add_argument(
        "--camera", action="append", metavar="NAME", help="run only this camera (repeatable)"
    )
    p.add_argument(
        "--duration-s", type=float, help="stop after this many seconds (default: run until stopped)"
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        type=cluster_address,
        help="run each camera as an actor on this Ray cluster: auto, ray://host:10001 or "
        "host:6379 (docs/cluster.md); also `cluster:` in the config",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = select_cameras(load_config(args.config), args.camera, str(args.config))
    for camera in cfg.cameras:
        camera.resolved_url()  # a missing ${VAR} fails here, before any camera opens
    if args.duration_s is not None and args.duration_s <= 0:
        raise ConfigError(f"--duration-s must be > 0, got {args.duration_s}")
    if args.cluster is not None or cfg.cluster is not None:
        return _run_cluster(cfg, args)
    if args.out is not None:  # before any camera opens (streamer/output.py)
        OutputFile(args.out, flag="--out", inputs=[args.config], append=True).check()
    result = run_until_stopped(cfg, out=args.out, duration_s=args.duration_s)
    return report_run(result)


def _run_cluster(cfg: AppConfig, args: argparse.Namespace) -> int:
    """``streamer run`` in cluster mode: the driver runs the cameras as Ray actors."""
    from streamer.cluster.driver import run_cluster

    if args.out is not None:
        raise ConfigError("--out is not supported with --cluster: MQTT is the data plane")
    if cfg.history is not None and not cfg.history.postgres:
        raise ConfigError(
            "--cluster needs `history.url` (PostgreSQL): actors on other machines cannot "
            "share one SQLite file"
        )
    run = run_cluster(
        cfg, address=args.cluster, source=str(args.config), duration_s=args.duration_s
    )
    unclean = sorted(n for n in run.actors if not run.stopped_cleanly.get(n))
    if unclean:
        logger.warning("cameras stopped by kill (no clean stop): %s", ", ".join(unclean))
    return 0


def report_run(result: RunResult) -> int:
    """Log what a live run did; exits the process at once if stage threads are stuck.

    Returns:
        The exit code (0).
    """
    for name, st in sorted(result.sources.items()):
        cam = result.cameras.get(name)
        logger.info(
            "camera %s: %d frames decoded, %d analysed, %d skipped (busy), %d skipped by "
            "rate, %d reconnects, %d stalls, %d corrupt",
            name,
            st.frames,
            cam.frames if cam else 0,
            st.skipped,
            st.skipped_by_rate,
            st.reconnects,
            st.stalls,
            st.corrupt,
        )
    if result.stop_s is not None:
        logger.info("stopped in %.2f s", result.stop_s)
    if result.left_in_ffmpeg:
        calls = collections.Counter(result.left_in_ffmpeg.values())
        logger.info(
            "%d camera(s) were still in an FFmpeg call at the stop (%s): left to end within "
            "their own timeouts; they can no longer deliver or publish",
            len(result.left_in_ffmpeg),
            ", ".join(f"{what}: {n}" for what, n in sorted(calls.items())),
        )
    if result.leftover_threads:
        logger.warning("threads still running at exit: %s", ", ".join(result.leftover_threads))
    stuck = stuck_threads(EXIT_GRACE_S)
    if stuck:
        # A stage thread blocked in native code (a hung detector call, say) would make
        # the interpreter wait for it forever at exit: the stop bound wins.
        logger.error(
            "threads stuck at exit (%s); exiting without waiting for them", ", ".join(stuck)
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
