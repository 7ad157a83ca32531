"""``streamer bench {replay,model,live,smoothing,startup,crowd,cameras,cluster,soak,history}``:
benchmarks that print JSON. Each lives in :mod:`streamer.bench` (one module per bench,
:mod:`streamer.bench.harness` for what they share); this command only registers them."""

from __future__ import annotations

import argparse
import importlib

BENCHES = (
    "replay",
    "model",
    "live",
    "smoothing",
    "startup",
    "crowd",
    "cameras",
    "cluster",
    "soak",
    "history",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (print JSON)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name in BENCHES:
        try:
            module = importlib.import_module(f"streamer.bench.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"streamer.bench.{name}":
                continue
            raise
        module.register(bsub)
