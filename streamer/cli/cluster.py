"""``streamer cluster status --config FILE [--json]``: the cameras on a Ray cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamer.cli.tables import print_table
from streamer.config import load_config


def cluster_address(value: str) -> str:
    """argparse type of ``--cluster``: a bad address is a usage error (exit 2)."""
    from streamer.cluster.config import check_address

    try:
        return check_address(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("cluster", help="cluster mode: the camera actors on a Ray cluster")
    csub = p.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    s = csub.add_parser(
        "status",
        help="which camera runs on which node, its status, restarts and fps",
        description="Ask every camera actor of the config on the Ray cluster (docs/cluster.md).",
    )
    s.add_argument("--config", type=Path, required=True, help="the YAML config of the run")
    s.add_argument(
        "--cluster",
        metavar="ADDRESS",
        type=cluster_address,
        help="cluster address (default: config's)",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from streamer.cluster.connect import connect
    from streamer.cluster.driver import cluster_config
    from streamer.cluster.status import collect, render

    cfg = load_config(args.config)
    ccfg = cluster_config(cfg, args.cluster, str(args.config))
    connect(ccfg, args.cluster)
    report = collect(cfg, ccfg)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(render(report))
    return 0
