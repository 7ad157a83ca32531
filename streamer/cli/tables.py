"""Tables the commands print: drawn on a terminal, whole everywhere else.

rich draws a table to the terminal's width, and to 80 columns when the output is not a
terminal, cutting cells with an ellipsis. Piped or redirected, a command's table is data
someone will read with ``cut``, ``awk`` or a spreadsheet, so it is written as plain TSV
(tab-separated, one header line; the title and the caption as ``# `` comment lines).
A table on stderr (the replay's summary next to log lines) is drawn at its natural
width instead, never cut.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

MAX_WIDTH = 1000  # columns a table on a log file may take at most

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _cell(value: object) -> str:
    from rich.text import Text

    text = value.plain if isinstance(value, Text) else str(value)
    # One record per line, one field per tab: neither may appear inside a field.
    return " ".join(text.replace("\t", " ").splitlines())


def table_tsv(table: Table) -> str:
    """``table`` as TSV text (see the module docstring), ending with a newline."""
    lines = []
    if table.title:
        lines.append(f"# {_cell(table.title)}")
    lines.append("\t".join(_cell(col.header) for col in table.columns))
    cells = [list(col.cells) for col in table.columns]
    for i in range(table.row_count):
        lines.append("\t".join(_cell(col[i]) for col in cells))
    if table.caption:
        lines.append(f"# {_cell(table.caption)}")
    return "\n".join(lines) + "\n"


def print_table(table: Table, file: IO[str] | None = None) -> None:
    """Print ``table`` on ``file`` (stdout): drawn on a terminal, else TSV."""
    out = file or sys.stdout
    if out.isatty():
        from streamer.cli.progress import console

        console(file=out).print(table)
    else:
        out.write(table_tsv(table))
        out.flush()


def print_whole(console: Console, table: Table) -> None:
    """Print ``table`` on ``console``: on a terminal at its width, else at the table's
    natural width (a log file gets every cell whole)."""
    if console.is_terminal:
        console.print(table)
        return
    from streamer.cli.progress import console as make_console

    wide = console.options.update_width(MAX_WIDTH)
    width = console.measure(table, options=wide).maximum
    # rich caps print(width=) at the console's width: a console as wide as the table.
    make_console(file=console.file, width=max(width, console.width)).print(table)
