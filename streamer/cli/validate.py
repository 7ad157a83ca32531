"""``streamer validate-config FILE``."""

from __future__ import annotations

import argparse
import logging

from streamer.config import load_config
from streamer.errors import ConfigError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate-config", help="check a YAML config; names the bad key and line")
    p.add_argument("file", help="YAML config file")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    for camera in cfg.cameras:
        try:
            camera.resolved_url()  # an unset ${VAR} would only fail at run time
        except ConfigError as err:
            raise ConfigError(f"{args.file}: {err}") from err
    # Names only: camera URLs may hold credentials.
    sections = [name for name, value in cfg if value is not None and name != "cameras"]
    cameras = ", ".join(c.name for c in cfg.cameras) or "none"
    logger.debug("%s: cameras: %s; sections: %s", args.file, cameras, ", ".join(sections))
    print(f"{args.file}: ok ({len(cfg.cameras)} camera(s))")
    return 0
