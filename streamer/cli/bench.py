"""``streamer bench {replay,model,live,smoothing,startup,crowd,cameras,cluster,soak}``: benchmarks
that print JSON."""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES = (
    "bench_replay",
    "bench_model",
    "bench_live",
    "bench_smoothing",
    "bench_startup",
    "bench_crowd",
    "bench_cameras",
    "bench_cluster",
    "bench_soak",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (print JSON)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(f"streamer.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"streamer.cli.{name}":
                continue
            raise
        module.register(bsub)
