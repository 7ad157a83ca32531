"""``streamer validate-config FILE [FILE ...]``: every problem of every file in one run.

Each file is checked whole: its structure and values (every key pydantic finds wrong,
each with its YAML line) and the environment variables it names (every unset one, even
when the structure has errors elsewhere). One line per problem on stderr, ``FILE: ok``
on stdout for a good file; exit 1 when any file has a problem.
"""

from __future__ import annotations

import argparse
import logging
import sys

from streamer.config import validate_file

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate-config",
        help="check YAML configs; names every bad key and its line",
        description="Check one or more YAML configs: every problem of each file, with its "
        "line, and every environment variable a file names that is not set. Exit 1 when "
        "any file has a problem.",
    )
    p.add_argument("file", nargs="+", help="YAML config file(s)")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.file:
        cfg, problems = validate_file(path)
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        if problems:
            failed += 1
            continue
        assert cfg is not None
        # Names only: camera URLs may hold credentials.
        sections = [name for name, value in cfg if value is not None and name != "cameras"]
        cameras = ", ".join(c.name for c in cfg.cameras) or "none"
        logger.debug("%s: cameras: %s; sections: %s", path, cameras, ", ".join(sections))
        print(f"{path}: ok ({len(cfg.cameras)} camera(s))")
    if failed and len(args.file) > 1:
        print(f"{failed} of {len(args.file)} file(s) have problems", file=sys.stderr)
    return 1 if failed else 0
