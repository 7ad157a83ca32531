"""Makes ``history_v1.sqlite``: a history of schema version 1 (the first schema), as a
streamer of that version wrote it: one replay run with two episodes (one described),
VA and mood segments. Kept in the repository; the migration test opens a copy.

    python -m tests.history.data.make_v1
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from streamer.history import schema
from streamer.history.config import HistoryConfig
from streamer.history.database import MIGRATIONS, make_engine
from streamer.messages import Description
from streamer.testing.history_load import frame_messages

OUT = Path(__file__).with_name("history_v1.sqlite")


def upgrade_to_v1(path: Path) -> None:
    engine = make_engine(HistoryConfig(path=path))
    script = ScriptDirectory(str(MIGRATIONS))

    def upgrade(current: Any, context: Any) -> Any:
        return script._upgrade_revs("0001", current)

    with engine.begin() as conn:
        ctx = MigrationContext.configure(connection=conn, opts={"fn": upgrade})
        with Operations.context(ctx):
            ctx.run_migrations()
    engine.dispose()


async def main() -> None:
    from streamer.history.recorder import Recorder

    OUT.unlink(missing_ok=True)
    upgrade_to_v1(OUT)
    rec = Recorder(1.0, anchor=1_700_000_000.0)
    rows = []
    for i in range(90):
        for msg in frame_messages(i, i / 30, None, 1, 2, mood_every=30, episode_every=40):
            rows += rec.add(msg)
    rows += rec.add(
        Description(
            "cam00:1:low:-667",
            "cam00",
            1,
            2.0,
            -0.5,
            0.1,
            "sad",
            ("down",),
            "looks down",
            "llm",
            "llama3.2",
            None,
            episode_id="cam00:1:low:-667",
        )
    )
    rows += rec.close()
    con = sqlite3.connect(OUT)
    con.execute(
        "insert into runs (kind, host, pid, version, source, cameras, started_at, last_seen,"
        " ended_at) values ('replay', 'host', 1, '0.1.0', 'clip.mp4', '[\"cam00\"]', ?, ?, ?)",
        (1_700_000_000.0, 1_700_000_003.0, 1_700_000_003.0),
    )
    v1_columns = {
        t.name: [c.name for c in t.columns if c.name not in ("id", "reviewed_at", "keep")]
        for t in schema.TABLES
    }
    table_of = {
        "episode": "episodes",
        "description": "descriptions",
        "va": "va_segments",
        "mood": "mood_segments",
    }
    for row in rows:
        if row.kind == "episode_description":
            con.execute(
                "update episodes set description = ? where episode_id = ?",
                (row.values["description"], row.values["episode_id"]),
            )
            continue
        table = table_of[row.kind]
        values = {**row.values, "run_id": 1}
        cols = [c for c in v1_columns[table] if c in values]
        con.execute(
            f"insert into {table} ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
            [values[c] for c in cols],
        )
    con.commit()
    con.execute("pragma journal_mode = delete")  # one self-contained file
    con.execute("vacuum")
    con.close()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    asyncio.run(main())
