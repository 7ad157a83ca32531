"""``streamer history ...``: read the history of past runs (SQLite or PostgreSQL).

    streamer history episodes --config FILE [--camera C] [--rule R] [--since 2h]
                              [--until ISO] [--unreviewed] [--json]
    streamer history mood --camera C [--since ...]     room mood over time
    streamer history va --camera C --track N           one track's VA bins
    streamer history stats                             rows, size, oldest and newest
    streamer history prune                             retention now
    streamer history export --since 7d -o FILE.csv     episodes with their descriptions

The database is the config's ``history`` section (``--config``), or ``--db PATH|URL``.
Tables show wall times in local time and durations in h/min/s; ``--json`` prints JSON
lines in the schemas of the live messages (``streamer.episode/1``, ``streamer.mood/1``)
and ``streamer.va_bin/1`` for bins. A bad time, a range that ends before it starts or
an unknown camera is one line and exit 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from streamer.errors import ConfigError, HistoryError, HistoryQueryError

EXIT_USAGE = 2
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
DESCRIPTION_COLUMN = 60  # characters of a description shown in a table


def parse_time(text: str, now: float | None = None) -> float:
    """``2h`` (that long ago: s, min, h, d, w), ``now``, or ISO-8601 (local time when no
    zone is given) as UNIX seconds."""
    now = time.time() if now is None else now
    if text.strip().lower() == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise HistoryQueryError(
            f"bad time {text!r}: expected a duration ago (30min, 2h, 7d) or ISO-8601 "
            "(2024-05-01T14:00)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return when.timestamp()


def local(t: float | None) -> str:
    """A wall time in local time (``-`` for none)."""
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def duration(s: float | None) -> str:
    """Seconds as ``1 h 02 min``, ``3 min 05 s`` or ``12.4 s``."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "history",
        help="episodes, mood and VA of past runs from the history database",
        description="Read the history kept by `streamer run` / `replay --history` "
        "(config `history:`; docs/history.md).",
    )
    hsub = p.add_subparsers(dest="history_command", metavar="WHAT", required=True)

    def common(q: argparse.ArgumentParser, since: bool = True) -> None:
        q.add_argument("--config", type=Path, help="YAML config with a `history:` section")
        q.add_argument(
            "--db", metavar="PATH|URL", help="the history: a SQLite file or postgresql://"
        )
        if since:
            q.add_argument("--since", metavar="WHEN", help="from: 2h, 7d, ISO-8601 (local time)")
            q.add_argument("--until", metavar="WHEN", help="to (default: now)")

    q = hsub.add_parser("episodes", help="episodes, newest first")
    common(q)
    q.add_argument("--camera", help="only this camera")
    q.add_argument("--rule", help="only this rule")
    q.add_argument("--unreviewed", action="store_true", help="only episodes not reviewed yet")
    q.add_argument("--limit", type=int, default=None, help="at most this many")
    q.add_argument("--json", action="store_true", help="streamer.episode/1 JSON lines")
    q.set_defaults(func=_cmd(cmd_episodes))

    q = hsub.add_parser("mood", help="the room mood of a camera over time")
    common(q)
    q.add_argument("--camera", required=True)
    q.add_argument("--json", action="store_true", help="streamer.mood/1 JSON lines")
    q.set_defaults(func=_cmd(cmd_mood))

    q = hsub.add_parser("va", help="one track's VA bins (mean, min, max, n)")
    common(q)
    q.add_argument("--camera", required=True)
    q.add_argument("--track", type=int, required=True)
    q.add_argument("--run", type=int, help="only this run (track ids restart with each run)")
    q.add_argument("--json", action="store_true", help="streamer.va_bin/1 JSON lines")
    q.set_defaults(func=_cmd(cmd_va))

    q = hsub.add_parser("stats", help="rows per table, size on disk, oldest and newest row")
    common(q, since=False)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd(cmd_stats))

    q = hsub.add_parser("prune", help="apply the retention (keep_days, keep_episode_days) now")
    common(q, since=False)
    q.set_defaults(func=_cmd(cmd_prune))

    q = hsub.add_parser("export", help="episodes with their descriptions to CSV or JSON lines")
    common(q)
    q.add_argument("--camera", help="only this camera")
    q.add_argument("-o", "--out", type=Path, required=True, help="FILE.csv or FILE.jsonl")
    q.set_defaults(func=_cmd(cmd_export))


def _cmd(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except HistoryQueryError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USAGE

    return run


def history_config(args: argparse.Namespace) -> Any:
    from streamer.history.config import HistoryConfig

    if args.db:
        return HistoryConfig.at(args.db)
    if args.config is None:
        raise HistoryQueryError(
            "name the history: --config FILE (its `history:` section) or --db PATH"
        )
    from streamer.config import load_config

    cfg = load_config(args.config)
    if cfg.history is None:
        raise ConfigError(f"{args.config}: no `history:` section")
    return cfg.history


@contextmanager
def connection(args: argparse.Namespace, *, write: bool = False) -> Iterator[Any]:
    """A connection to the history (migrated when older; an error when absent)."""
    from sqlalchemy import exc

    from streamer.history.database import describe_error, open_database

    cfg = history_config(args)
    try:
        engine = open_database(cfg, writer=write, create=False)
    except exc.SQLAlchemyError as err:
        raise HistoryError(f"{cfg.where()}: {describe_error(err)}") from err
    try:
        with engine.begin() if write else engine.connect() as conn:
            yield conn
    except exc.SQLAlchemyError as err:
        raise HistoryError(f"{cfg.where()}: {describe_error(err)}") from err
    finally:
        engine.dispose()


def _range(args: argparse.Namespace) -> tuple[float | None, float | None]:
    from streamer.history.queries import check_range

    now = time.time()
    after = parse_time(args.since, now) if args.since else None
    before = parse_time(args.until, now) if args.until else None
    check_range(after, before)
    return after, before


def _camera(conn: Any, camera: str | None) -> None:
    from streamer.history.queries import check_camera

    check_camera(conn, camera)


def _print_json(records: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> None:
    from streamer.publish.jsonl import dumps

    for rec in records:
        print(dumps(rec))


def _table(title: str, columns: list[str]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table


def _show(table: Any) -> None:
    from rich.console import Console

    Console().print(table)


def cmd_episodes(args: argparse.Namespace) -> int:
    from streamer.history import queries as q
    from streamer.publish.sanitize import safe_text

    after, before = _range(args)
    with connection(args) as conn:
        _camera(conn, args.camera)
        f = q.EpisodeFilter(
            args.camera,
            args.rule,
            False if args.unreviewed else None,
            after,
            before,
            args.limit,
        )
        if args.json:
            _print_json([q.episode_record(r) for r in q.episode_rows(conn, f)])
            return 0
        items = q.review_items(conn, f)
    table = _table(
        f"{len(items)} episode(s)",
        ["id", "camera", "track", "rule", "start", "end", "duration", "state", "reviewed"],
    )
    table.add_column("description")
    for it in items:
        state = "open" if it["open"] else "interrupted" if it["interrupted"] else it["reason"]
        desc = (it["description"] or {}).get("text") or ""
        if len(desc) > DESCRIPTION_COLUMN:
            desc = desc[: DESCRIPTION_COLUMN - 1] + "…"
        table.add_row(
            str(it["id"]),
            safe_text(it["camera"]),
            str(it["track_id"]),
            safe_text(it["rule"]),
            local(it["wall_start"]),
            local(it["wall_end"]),
            duration(it["duration_s"]),
            safe_text(str(state)) + (" (kept)" if it["keep"] else ""),
            "yes" if it["reviewed_at"] else "",
            safe_text(desc),
        )
    if not items:
        table.caption = "no episode"
    _show(table)
    return 0


def cmd_mood(args: argparse.Namespace) -> int:
    from streamer.history import queries as q

    after, before = _range(args)
    with connection(args) as conn:
        _camera(conn, args.camera)
        entries = q.mood_entries(conn, args.camera, after, before)
    if args.json:
        _print_json([q.mood_record(args.camera, e, live) for e, live in entries])
        return 0
    table = _table(
        f"room mood of {args.camera}: {len(entries)} mood(s)",
        ["time", "faces", "valence", "arousal", "spread v/a", "quadrant"],
    )

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:+.2f}"

    for e, _ in entries:
        spread = (
            "-" if e.valence_spread is None else f"{e.valence_spread:.2f}/{e.arousal_spread:.2f}"
        )
        table.add_row(
            local(e.wall), str(e.count), num(e.valence), num(e.arousal), spread, e.quadrant
        )
    _show(table)
    return 0


def cmd_va(args: argparse.Namespace) -> int:
    from streamer.history import queries as q

    after, before = _range(args)
    with connection(args) as conn:
        _camera(conn, args.camera)
        bins = q.va_bins(conn, args.camera, args.track, run_id=args.run, after=after, before=before)
    if args.json:
        _print_json([q.va_record(args.camera, r, t, b) for r, t, b in bins])
        return 0
    table = _table(
        f"VA of {args.camera} track {args.track}: {len(bins)} bin(s)",
        ["run", "time", "n", "valence mean", "min", "max", "arousal mean", "min", "max"],
    )
    for run, _, b in bins:
        table.add_row(
            str(run),
            local(b.start),
            str(b.n),
            *(f"{x:+.3f}" for x in b.valence),
            *(f"{x:+.3f}" for x in b.arousal),
        )
    _show(table)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from streamer.history import queries as q

    cfg = history_config(args)
    with connection(args) as conn:
        st = q.stats(conn, cfg.where(), None if cfg.postgres else str(cfg.path.expanduser()))
    if args.json:
        print(json.dumps(st))
        return 0
    table = _table(f"history {cfg.where()}", ["table", "rows", "oldest", "newest"])
    for name, t in st["tables"].items():
        table.add_row(name, str(t["rows"]), local(t["oldest"]), local(t["newest"]))
    size = sum(st["size_bytes"].values())
    table.caption = (
        f"{size / 1e6:.2f} MB on disk; {st['episodes_unreviewed']} episode(s) unreviewed, "
        f"{st['episodes_kept']} kept"
    )
    _show(table)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from sqlalchemy import exc

    from streamer.history.database import describe_error, open_database
    from streamer.history.prune import prune_now

    cfg = history_config(args)
    try:
        engine = open_database(cfg, create=False)
        try:
            p = prune_now(engine, time.time(), cfg.keep_days, cfg.keep_episode_days)
        finally:
            engine.dispose()
    except exc.SQLAlchemyError as err:
        raise HistoryError(f"{cfg.where()}: {describe_error(err)}") from err
    deleted = ", ".join(f"{n} {t}" for t, n in sorted(p.deleted.items()) if n) or "nothing"
    print(
        f"pruned {deleted} (keep_days {cfg.keep_days:g}, keep_episode_days "
        f"{cfg.keep_episode_days:g}; kept episodes stay)"
    )
    return 0


EXPORT_COLUMNS = (
    "id",
    "episode_id",
    "run",
    "camera",
    "track_id",
    "rule",
    "state",
    "wall_start",
    "wall_end",
    "start_local",
    "end_local",
    "duration_s",
    "reason",
    "valence_mean",
    "arousal_mean",
    "reviewed_at",
    "keep",
    "description_source",
    "description",
)


def cmd_export(args: argparse.Namespace) -> int:
    from streamer.history import queries as q

    after, before = _range(args)
    suffix = args.out.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise HistoryQueryError(f"{args.out}: expected a .csv or .jsonl file name")
    with connection(args) as conn:
        _camera(conn, args.camera)
        items = q.review_items(
            conn, q.EpisodeFilter(args.camera, None, None, after, before, None, newest_first=False)
        )
    with _output(args.out) as fh:
        if suffix == ".jsonl":
            from streamer.publish.jsonl import dumps

            for it in items:
                fh.write(dumps(it) + "\n")
        else:
            w = csv.writer(fh)
            w.writerow(EXPORT_COLUMNS)
            for it in items:
                d = it["description"] or {}
                w.writerow(
                    [
                        it["id"],
                        it["episode_id"],
                        it["run"],
                        it["camera"],
                        it["track_id"],
                        it["rule"],
                        it["state"],
                        it["wall_start"],
                        it["wall_end"],
                        local(it["wall_start"]),
                        local(it["wall_end"]),
                        it["duration_s"],
                        it["reason"],
                        it["valence"]["mean"],
                        it["arousal"]["mean"],
                        it["reviewed_at"],
                        int(it["keep"]),
                        d.get("source", ""),
                        d.get("text", ""),
                    ]
                )
    print(f"{len(items)} episode(s) written to {args.out}", file=sys.stderr)
    return 0


@contextmanager
def _output(path: Path) -> Iterator[TextIO]:
    """``path`` written atomically (a regular file), or in place (a device or FIFO)."""
    from streamer.publish.jsonl import replaceable

    if not replaceable(path):
        with path.open("w", encoding="utf-8", newline="") as fh:
            yield fh
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
