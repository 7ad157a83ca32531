"""Tables are never cut at 80 columns: TSV on a pipe, the natural width on a log file."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamer.cli.replay import print_summary
from streamer.cli.tables import print_table, table_tsv
from streamer.pipeline import CameraStats
from streamer.runtime.replay import ReplayResult
from streamer.sources.decode import DamageReport
from streamer.sources.file import FileReport
from streamer.summary import Summarizer
from tests.helpers.mqtt import make_va

LONG = "a-camera-name-long-enough-to-push-any-80-column-table-past-its-edge"


def _table() -> Table:
    table = Table(title="the title")
    for col in ("name", "value", "note"):
        table.add_column(col)
    table.add_row(LONG, "1.5", Text("tab\there, line\nbreak"))
    table.add_row("b", "2", "")
    table.caption = "the caption"
    return table


def test_tsv_keeps_every_cell_whole_one_record_a_line() -> None:
    assert table_tsv(_table()).splitlines() == [
        "# the title",
        "name\tvalue\tnote",
        f"{LONG}\t1.5\ttab here, line break",
        "b\t2\t",
        "# the caption",
    ]


def test_print_table_draws_on_a_terminal_only() -> None:
    piped = io.StringIO()
    print_table(_table(), piped)
    assert piped.getvalue() == table_tsv(_table())


def test_piped_command_prints_tsv_not_a_cut_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "models", "list"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    title, header, *rows = proc.stdout.splitlines()
    assert title.startswith("# model store: /") and "…" not in title
    assert header.split("\t") == ["name", "kind", "version", "cached", "license", "sha256"]
    assert rows and all(len(row.split("\t")) == 6 for row in rows)
    assert any(row.startswith("yunet\tmodel\t") for row in rows)


def test_replay_summary_in_a_log_file_is_not_cut() -> None:
    summary = Summarizer()
    for i in range(30):
        summary.add(make_va(LONG, 12345, t=i / 30, v=0.5, a=0.25))
    log = io.StringIO()
    console = Console(file=log, width=80)  # what rich does when stderr is not a terminal
    assert not console.is_terminal
    result = ReplayResult(
        stats=CameraStats(LONG, frames=30, faces=30),
        report=FileReport(DamageReport(), announced=30, seen=30),
        model="test",
        video_fps=30.0,
        frame_count=30,
        wall_s=1.5,
        run_s=1.0,
        run_cpu_s=1.0,
        sinks={},
    )
    print_summary(console, summary, result)
    row = next(line for line in log.getvalue().splitlines() if "12345" in line)
    assert LONG in row and "+0.500" in row and "+0.250" in row and "excited" in row
