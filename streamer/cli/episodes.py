"""``streamer episodes RESULTS.jsonl --config FILE``: episode rules over a recording.

Runs the rules of the config's ``episodes:`` section over the VA samples and track
events of a JSONL written by ``streamer replay`` or ``streamer run``, and prints the
episodes as a table (stderr-free, on stdout) or, with ``--json``, as the JSON lines the
replay itself writes: for a replay's JSONL and the same rules they are identical.

The file is read by :mod:`streamer.recorded`: a bad line, or media time running
backwards within a track, is one error naming the file and the line (``--sort`` orders
the records by time first); records of other schemas are counted and reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table
from rich.text import Text

from streamer.cli.tables import print_table
from streamer.config import load_config
from streamer.episodes.stage import replay_records
from streamer.errors import ConfigError
from streamer.messages import Episode
from streamer.publish.jsonl import dumps
from streamer.publish.sanitize import safe_text
from streamer.recorded import RecordReader, report_skipped


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
    p.add_argument(
        "--sort",
        action="store_true",
        help="order the records by media time t first (default: a track whose t runs "
        "backwards is an error naming the line)",
    )
    p.set_defaults(func=cmd_episodes)


def _episodes(path: Path, cfg_path: Path, sort: bool) -> list[Episode]:
    cfg = load_config(cfg_path)
    if cfg.episodes is None:
        raise ConfigError(f"{cfg_path}: no `episodes:` section with rules")
    reader = RecordReader(path, sort=sort)
    episodes = list(replay_records((msg for _, msg in reader.messages()), cfg.episodes))
    report_skipped(reader)
    return episodes


def cmd_episodes(args: argparse.Namespace) -> int:
    episodes = _episodes(args.results, args.config, args.sort)
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
            Text(safe_text(ep.camera)),
            str(ep.track_id),
            Text(safe_text(ep.rule)),
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
