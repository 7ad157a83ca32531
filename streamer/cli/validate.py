"""``streamer validate-config FILE [FILE ...]``."""

from __future__ import annotations

import argparse
import logging
import sys

from streamer.config import AppConfig, load_config
from streamer.errors import ConfigError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate-config", help="check YAML configs; names the bad key and line")
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML config file(s)")
    p.set_defaults(func=cmd_validate)


def validate_file(path: str) -> AppConfig:
    """Load ``path`` and resolve its camera URLs (an unset ``${VAR}`` would only fail at
    run time); raises ConfigError naming the file."""
    cfg = load_config(path)
    for camera in cfg.cameras:
        try:
            camera.resolved_url()
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
    return cfg


def cmd_validate(args: argparse.Namespace) -> int:
    if len(args.files) == 1:  # one file: its error is the command's one error line
        _report(args.files[0], validate_file(args.files[0]))
        return 0
    failed = 0
    for path in args.files:  # several: every file is checked, then the exit code says
        try:
            cfg = validate_file(path)
        except ConfigError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            continue
        _report(path, cfg)
    return 1 if failed else 0


def _report(path: str, cfg: AppConfig) -> None:
    # Names only: camera URLs may hold credentials.
    sections = [name for name, value in cfg if value is not None and name != "cameras"]
    cameras = ", ".join(c.name for c in cfg.cameras) or "none"
    logger.debug("%s: cameras: %s; sections: %s", path, cameras, ", ".join(sections))
    print(f"{path}: ok ({len(cfg.cameras)} camera(s))")
