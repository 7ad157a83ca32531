"""Replays of a real clip into a real history (SQLite and PostgreSQL), and the CLI that
reads it back; a locked database costs history rows only, never analysis."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import read_jsonl, run_streamer


def last_episode_records(jsonl: Path) -> dict[str, dict[str, Any]]:
    """The replay's latest record of every episode (an ended one replaces its start)."""
    out = {}
    for rec in read_jsonl(jsonl):
        if rec.get("schema") == "streamer.episode/1":
            out[rec["id"]] = rec
    return out


def replay_into(
    target: str, config: Path, out: Path, video: Path
) -> subprocess.CompletedProcess[str]:
    proc = run_streamer(
        "replay",
        str(video),
        "--config",
        str(config),
        "--out",
        str(out),
        "--history",
        target,
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def check_round_trip(db: str, jsonl: Path) -> None:
    expected = last_episode_records(jsonl)
    assert expected, "the rules fire on this clip"
    proc = run_streamer("history", "episodes", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    got = {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert got == expected  # same ids, times, reasons, statistics
    proc = run_streamer("history", "mood", "--db", db, "--camera", "single_face", "--json")
    moods = [json.loads(x) for x in proc.stdout.splitlines()]
    replay_moods = [r for r in read_jsonl(jsonl) if r.get("schema") == "streamer.mood/1"]
    assert [m["t"] for m in moods] == [m["t"] for m in replay_moods]
    assert [m["count"] for m in moods] == [m["count"] for m in replay_moods]
    proc = run_streamer(
        "history", "va", "--db", db, "--camera", "single_face", "--track", "1", "--json"
    )
    bins = [json.loads(x) for x in proc.stdout.splitlines()]
    samples = [r for r in read_jsonl(jsonl) if r.get("schema") == "streamer.va/1"]
    assert sum(b["n"] for b in bins) == len(samples)  # every sample is in a bin
    assert len(bins) == int(samples[-1]["t"] - samples[0]["t"]) + 1 or len(bins) >= 2


def test_sqlite_round_trip_of_a_real_replay(
    models: None, face_video: Path, rules_config: Path, tmp_path: Path
) -> None:
    db = tmp_path / "history.db"
    out = tmp_path / "va.jsonl"
    proc = replay_into(str(db), rules_config, out, face_video)
    assert f"history {db} (run 1): written" in proc.stderr
    assert "none dropped" in proc.stderr and "row(s) dropped" not in proc.stderr
    check_round_trip(str(db), out)
    # the table, an export, the statistics
    table = run_streamer("history", "episodes", "--db", str(db), "--camera", "single_face")
    assert table.returncode == 0 and "episode(s)" in table.stdout
    export = tmp_path / "ep.csv"
    proc = run_streamer("history", "export", "--db", str(db), "--since", "1d", "-o", str(export))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(export.open()))
    assert {r["episode_id"] for r in rows} == set(last_episode_records(out))
    stats = json.loads(run_streamer("history", "stats", "--db", str(db), "--json").stdout)
    assert stats["tables"]["episodes"]["rows"] == len(rows)
    assert sqlite3.connect(db).execute("pragma journal_mode").fetchone() == ("wal",)


@pytest.mark.postgres
def test_postgres_round_trip_of_a_real_replay(
    models: None, face_video: Path, rules_config: Path, tmp_path: Path, pg_url: str
) -> None:
    out = tmp_path / "va.jsonl"
    replay_into(pg_url, rules_config, out, face_video)
    check_round_trip(pg_url, out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["episodes", "--camera", "nope"], "no camera 'nope' in the history (known: single_face)"),
        (["episodes", "--since", "1h", "--until", "2h"], "the range ends before it starts"),
        (["mood", "--camera", "single_face", "--since", "yesterday-ish"], "bad time"),
        (["export", "--since", "1d", "-o", "x.txt"], "expected a .csv or .jsonl"),
    ],
)
def test_bad_ranges_and_unknown_cameras_are_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from streamer.history.config import HistoryConfig
    from streamer.history.database import open_database
    from streamer.history.writer import RunInfo, Writer

    db = tmp_path / "h.db"
    engine = open_database(HistoryConfig(path=db))
    Writer(HistoryConfig(path=db), RunInfo("replay", ("single_face",)), None).register(engine)
    engine.dispose()
    proc = run_streamer("history", *args, "--db", str(db))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr


def test_a_locked_database_costs_history_rows_never_analysis(
    models: None, face_video: Path, rules_config: Path, replay_jsonl: Path, tmp_path: Path
) -> None:
    """An exclusive lock on the SQLite file for 10 s during a replay: the VA lines are
    byte-identical to a run without history; the drops are counted in the summary."""
    db = tmp_path / "history.db"
    open_database_now(db)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(rules_config.read_text() + "history:\n  flush_timeout_s: 1\n")
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:  # at least 10 s, and until the replay has ended
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        t_end = time.monotonic() + 10
        release.wait(120)
        time.sleep(max(0.0, t_end - time.monotonic()))
        con.execute("COMMIT")
        con.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(30)
    out = tmp_path / "va.jsonl"
    try:
        proc = run_streamer(
            "replay",
            str(face_video),
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--history",
            str(db),
            "--no-progress",
        )
    finally:
        release.set()
        holder.join()
    assert proc.returncode == 0, proc.stderr
    va = [line for line in out.read_text().splitlines() if '"streamer.va/1"' in line]
    assert va == [
        line for line in replay_jsonl.read_text().splitlines() if '"streamer.va/1"' in line
    ]
    assert "row(s) dropped (flush_timeout" in proc.stderr, proc.stderr  # the summary
    assert sqlite3.connect(db).execute("pragma integrity_check").fetchone() == ("ok",)


def open_database_now(db: Path) -> None:
    from streamer.history.config import HistoryConfig
    from streamer.history.database import open_database

    open_database(HistoryConfig(path=db)).dispose()


def test_history_command_without_a_database_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "history", "episodes"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2 and "--config FILE" in proc.stderr
