"""``streamer doctor --config FILE [--json]``: check every part the config needs.

One line per check (``ok`` / ``warning`` / ``failed``, what was found, and after ``->``
what to do), printed in order as the checks finish; ``--json`` prints one object
instead. Exit code 1 when a part failed. The checks are in
:mod:`streamer.runtime.doctor`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamer.runtime.doctor import Check, run_doctor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check every part a config needs: models, cameras, broker, LLM, web, GPU",
        description="Check the config, the models, each camera (first frame), the MQTT "
        "broker, the LLM, the web port and token, the history database and the GPU "
        "runtimes: one line each, ok / warning / failed with what to do. Each check is "
        "bounded by its own timeout. Exit code 1 when a configured part failed.",
    )
    p.add_argument("--config", type=Path, required=True, help="YAML config to check")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.set_defaults(func=cmd_doctor)


def _print_line(check: Check) -> None:
    print(check.line(), flush=True)


def cmd_doctor(args: argparse.Namespace) -> int:
    report = run_doctor(args.config, None if args.json else _print_line)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        print()
    return 1 if report.failed else 0
