"""Schema versions: a history of the first schema is migrated on open (a copy kept
first); a newer one is refused with one line naming both versions; a database that is
not a history is refused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from streamer.errors import HistoryError, HistoryVersionError
from streamer.history import queries as q
from streamer.history.config import HistoryConfig
from streamer.history.database import open_database
from streamer.history.schema import HEAD, SCHEMA_VERSION
from tests.helpers.cli import run_streamer

V1 = Path(__file__).parent / "data" / "history_v1.sqlite"


def test_a_first_schema_history_is_migrated_and_a_copy_kept(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    shutil.copyfile(V1, db)
    engine = open_database(HistoryConfig(path=db))
    backup = tmp_path / "history.db.v1.bak"
    assert backup.read_bytes() == V1.read_bytes() or _same_rows(backup, V1)
    with engine.begin() as conn:
        assert conn.exec_driver_sql("select version_num from alembic_version").scalar() == HEAD
        items = q.review_items(conn, q.EpisodeFilter(newest_first=False))
        assert [i["episode_id"] for i in items] == ["cam00:1:low:-667", "cam00:1:low:667"]
        assert items[0]["description"]["text"] == "looks down"  # old rows kept whole
        assert [i["reviewed_at"] for i in items] == [None, None]
        assert [i["keep"] for i in items] == [False, False]
        assert q.mark_reviewed(conn, [items[0]["id"]]) == 1  # the new columns work
        assert q.set_keep(conn, items[1]["id"])
        assert len(q.va_bins(conn, "cam00", 2)) == 3
    engine.dispose()
    # opening it again migrates nothing and copies nothing
    open_database(HistoryConfig(path=db)).dispose()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".bak") == [backup.name]


def _same_rows(a: Path, b: Path) -> bool:
    def dump(p: Path) -> list[str]:
        return list(sqlite3.connect(p).iterdump())

    return dump(a) == dump(b)


def test_a_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    open_database(HistoryConfig(path=db)).dispose()
    con = sqlite3.connect(db)
    con.execute("update alembic_version set version_num = '0007'")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(HistoryVersionError) as err:
        open_database(HistoryConfig(path=db))
    assert err.value.found == 7 and err.value.supported == SCHEMA_VERSION
    proc = run_streamer("history", "stats", "--db", str(db))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"schema version 7 is newer than this streamer's ({SCHEMA_VERSION})" in lines[0]
    assert str(db) in lines[0]
    assert db.read_bytes() == before  # untouched
    assert not list(tmp_path.glob("*.bak"))


def test_a_database_that_is_not_a_history_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("create table photos (id integer)")
    con.commit()
    con.close()
    with pytest.raises(HistoryError, match="not a streamer history"):
        open_database(HistoryConfig(path=other))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HistoryError, match="not a SQLite database"):
        open_database(HistoryConfig(path=garbage))
    with pytest.raises(HistoryError, match="no directory"):
        open_database(HistoryConfig(path=tmp_path / "missing" / "h.db"))
