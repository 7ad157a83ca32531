"""``streamer episodes RESULTS.jsonl --config FILE``: episode rules over a recording.

Runs the rules of the config's ``episodes:`` section over the VA samples and track
events of a JSONL written by ``streamer replay`` or ``streamer run``, and prints the
episodes as a table (stderr-free, on stdout) or, with ``--json``, as the JSON lines the
replay itself writes: for a replay's JSONL and the same rules they are identical.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from streamer.cli.tables import print_table
from streamer.config import load_config
from streamer.episodes.stage import replay_records
from streamer.errors import ConfigError, MediaError
from streamer.messages import Episode
from streamer.publish.jsonl import dumps


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "episodes",
        help="run episode rules over a recorded JSONL (tune rules on recordings)",
        description="Apply the `episodes:` rules of --config to the VA samples of a JSONL "
        "written by `streamer replay` or `streamer run`, and print the episodes.",
    )
    p.add_argument("results", type=Path, help="JSONL file of a replay or run")
    p.add_argument("--config", type=Path, required=True, help="YAML config with `episodes:`")
    p.add_argument(
        "--json", action="store_true", help="print streamer.episode/1 JSON lines, not a table"
    )
    p.set_defaults(func=cmd_episodes)


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) of a JSONL file; a bad line is an error naming it."""
    try:
        fh = path.open(encoding="utf-8")
    except OSError as err:
        raise MediaError(f"{path}: cannot read: {err.strerror or err}") from err
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as err:
                    raise MediaError(f"{path}:{n}: not a JSON line: {err}") from err
                if not isinstance(rec, dict):
                    raise MediaError(f"{path}:{n}: expected a JSON object")
                yield n, rec
        except UnicodeDecodeError as err:
            raise MediaError(f"{path}: not UTF-8 text") from err


def _episodes(path: Path, cfg_path: Path) -> list[Episode]:
    cfg = load_config(cfg_path)
    if cfg.episodes is None:
        raise ConfigError(f"{cfg_path}: no `episodes:` section with rules")
    line = 0

    def numbered() -> Iterator[dict[str, Any]]:
        nonlocal line
        for line, rec in read_records(path):  # noqa: B007 (the line is read on error)
            yield rec

    try:
        return list(replay_records(numbered(), cfg.episodes))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise MediaError(
            f"{path}:{line}: not a streamer record ({type(err).__name__}: {err})"
        ) from err


def cmd_episodes(args: argparse.Namespace) -> int:
    episodes = _episodes(args.results, args.config)
    if args.json:
        for ep in episodes:
            print(dumps(ep.to_record()))
        return 0
    table = Table(title=f"{sum(e.state == 'ended' for e in episodes)} episode(s)")
    for col in ("camera", "track", "rule", "start s", "end s", "duration s", "reason"):
        table.add_column(col)
    for col in ("valence mean", "arousal mean"):
        table.add_column(col, justify="right")
    for ep in episodes:
        if ep.state != "ended":
            continue
        table.add_row(
            ep.camera,
            str(ep.track_id),
            ep.rule,
            f"{ep.t_start:.2f}",
            f"{ep.t_end:.2f}" if ep.t_end is not None else "-",
            f"{ep.duration_s:.2f}",
            ep.reason or "-",
            f"{ep.valence.mean:+.3f}",
            f"{ep.arousal.mean:+.3f}",
        )
    if not episodes:
        table.caption = "no episode"
    print_table(table)
    return 0
