"""Opening the history database: engines, the schema version, migrations, errors.

    engine = open_database(cfg)           # SQLite or PostgreSQL, migrated to HEAD
    engine = open_database(cfg, create=False, migrate=False)   # a reader: as it is

SQLite runs in WAL mode with ``synchronous=NORMAL`` (a crash loses at most the last
transactions, never the file), a short busy timeout (the writer retries on its own
schedule), and ``BEGIN IMMEDIATE`` for writing transactions, so two processes writing
one file take turns instead of failing half way. PostgreSQL connects with psycopg 3,
the password from ``history.password_env``; dead pooled connections are replaced.

The schema version is Alembic's ``alembic_version``. On open:

* none (an empty database): every migration runs, up to :data:`~schema.HEAD`;
* an older version: a SQLite file is first copied to ``PATH.v<old>.bak`` (SQLite's
  backup API: a consistent copy even while others write), then migrated; PostgreSQL
  migrates in one transaction (its DDL is transactional: a failed migration changes
  nothing) under an advisory lock, so cluster actors opening together migrate once;
* a newer version: refused with :class:`~streamer.errors.HistoryVersionError`, which
  names both versions; nothing is touched.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import event, exc

from streamer.errors import HistoryError, HistoryVersionError
from streamer.history.config import HistoryConfig
from streamer.history.schema import HEAD, REVISIONS, SCHEMA_VERSION, metadata, version_of

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 250  # SQLite: how long a statement waits for another writer (ms)
CONNECT_TIMEOUT_S = 5  # PostgreSQL: connection timeout (s)
MIGRATION_LOCK = 0x73747265  # PostgreSQL advisory lock held while migrating ("stre")
MIGRATIONS = Path(__file__).parent / "migrations"

# SQLite result codes (sqlite3.Error.sqlite_errorcode & 0xFF)
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL, SQLITE_IOERR = 5, 6, 13, 10
SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_CANTOPEN = 8, 11, 26, 14
_SQLITE_TRANSIENT = {SQLITE_BUSY, SQLITE_LOCKED}
_SQLITE_FATAL = {SQLITE_FULL, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_IOERR}


def _sqlite_pragmas(writer: bool, max_pages: int | None) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, explicitly
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if writer:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            if max_pages is not None:
                cur.execute(f"PRAGMA max_page_count = {max_pages}")
        finally:
            cur.close()

    return on_connect


def make_engine(cfg: HistoryConfig, *, writer: bool = True) -> sa.Engine:
    """An engine on the configured database (nothing is connected yet)."""
    if cfg.url is None:
        path = cfg.path.expanduser()
        engine = sa.create_engine(
            f"sqlite+pysqlite:///{path}",
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=2,
            max_overflow=4,
        )
        max_pages = None
        if cfg.max_size_mb is not None:
            max_pages = max(16, int(cfg.max_size_mb * 1024 * 1024 / 4096))
        event.listen(engine, "connect", _sqlite_pragmas(writer, max_pages))

        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    parts = urlsplit(cfg.url)
    url = sa.URL.create(
        "postgresql+psycopg",
        username=parts.username,
        password=cfg.password(),
        host=parts.hostname,
        port=parts.port,
        database=parts.path.lstrip("/"),
    )
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=4,
        hide_parameters=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "streamer"},
    )


def sqlite_code(err: BaseException) -> int | None:
    """The SQLite primary result code of ``err`` (or of what it wraps), else None."""
    orig = err.orig if isinstance(err, exc.DBAPIError) else err
    code = getattr(orig, "sqlite_errorcode", None) if isinstance(orig, sqlite3.Error) else None
    return None if code is None else int(code) & 0xFF


def is_transient(err: BaseException) -> bool:
    """A failure that may go away by itself: a locked or busy SQLite file, a lost or
    refused PostgreSQL connection. Retried; what waits meanwhile is bounded."""
    code = sqlite_code(err)
    if code is not None:
        return code in _SQLITE_TRANSIENT
    if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
        return True
    if isinstance(err, exc.OperationalError | exc.InterfaceError | exc.TimeoutError):
        return _pg_class(err) not in ("53", "42", "28")  # resources, schema, auth: not
    return False


def is_full(err: BaseException) -> bool:
    """The disk (or the configured size) is full: the history stops for the run."""
    if sqlite_code(err) == SQLITE_FULL:
        return True
    return _pg_class(err) == "53"  # insufficient resources (disk full, out of memory)


def is_fatal(err: BaseException) -> bool:
    """A failure no retry mends (full, read-only, corrupt, not a database)."""
    code = sqlite_code(err)
    return code in _SQLITE_FATAL if code is not None else is_full(err)


def _pg_class(err: BaseException) -> str | None:
    orig = err.orig if isinstance(err, exc.DBAPIError) else err
    state = getattr(orig, "sqlstate", None)
    return state[:2] if isinstance(state, str) else None


def describe_error(err: BaseException) -> str:
    """One line for a database failure (no SQL, no parameters, no password)."""
    orig = err.orig if isinstance(err, exc.DBAPIError) else err
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text


def revision(conn: sa.Connection) -> str | None:
    """The schema revision of the database (None: no history schema in it yet).

    Raises:
        HistoryError: the database holds tables but is not a streamer history.
    """
    insp = sa.inspect(conn)
    tables = set(insp.get_table_names())
    if "alembic_version" not in tables:
        if tables:
            raise HistoryError(
                f"not a streamer history (it holds {', '.join(sorted(tables)[:5])}): "
                "use another database"
            )
        return None
    rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return None if rev is None else str(rev)


def open_database(
    cfg: HistoryConfig, *, writer: bool = True, create: bool = True, migrate: bool = True
) -> sa.Engine:
    """An engine on the history of ``cfg``, its schema checked (and made or migrated).

    Args:
        cfg: the ``history`` section.
        writer: the engine writes (SQLite: WAL set, ``BEGIN IMMEDIATE``).
        create: make the schema in an empty database (else: an error).
        migrate: migrate an older schema (else: an error).

    Raises:
        HistoryVersionError: the schema is newer than this streamer's.
        HistoryError: what the database *is* makes it unusable: not a database, not a
            history, no such file or directory, or (with ``create``/``migrate`` off)
            empty or older.
        sqlalchemy.exc.DBAPIError: the state it is in: locked or unreachable
            (:func:`is_transient`: retry), full, read-only or damaged (:func:`is_fatal`).
    """
    where = cfg.where()
    if cfg.url is None:
        _check_sqlite_file(cfg.path.expanduser(), create)
    engine = make_engine(cfg, writer=writer)
    try:
        with engine.connect() as conn:
            rev = _checked_revision(conn, where)
        if rev == HEAD:
            return engine
        if rev is None and not create:
            raise HistoryError(f"{where}: no history in it yet")
        if rev is not None and not migrate:
            raise HistoryError(
                f"{where}: the history's schema version {version_of(rev)} is older than "
                f"this streamer's ({SCHEMA_VERSION}): open it once with `streamer history "
                "stats` or a run to migrate it"
            )
        _migrate(engine, cfg, rev)
        return engine
    except exc.DBAPIError as err:
        engine.dispose()
        if sqlite_code(err) == SQLITE_NOTADB:
            raise HistoryError(f"{where}: not a SQLite database") from err
        raise
    except BaseException:
        engine.dispose()
        raise


def _checked_revision(conn: sa.Connection, where: str) -> str | None:
    try:
        rev = revision(conn)
    except HistoryError as err:
        raise HistoryError(f"{where}: {err}") from None
    if rev is not None and rev not in REVISIONS:
        found = version_of(rev)
        if found > SCHEMA_VERSION:
            raise HistoryVersionError(where, found, SCHEMA_VERSION)
        raise HistoryError(f"{where}: unknown history schema revision {rev!r}")
    return rev


def _check_sqlite_file(path: Path, create: bool) -> None:
    if path.exists() and not path.is_file():
        raise HistoryError(f"{path}: not a regular file")
    if not path.exists():
        if not create:
            raise HistoryError(f"{path}: no such history file")
        if not path.parent.is_dir():
            raise HistoryError(f"{path}: cannot create it: no directory {path.parent}")


def _migrate(engine: sa.Engine, cfg: HistoryConfig, rev: str | None) -> None:
    """Run the migrations from ``rev`` (None: from nothing) to HEAD."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    if rev is not None:
        backup = _backup(cfg, rev)
        logger.warning(
            "history %s: migrating the schema from version %d to %d%s",
            cfg.where(),
            version_of(rev),
            SCHEMA_VERSION,
            f" (a copy of the old one: {backup})" if backup else "",
        )

    def upgrade(current: Any, context: Any) -> Any:
        return script._upgrade_revs(HEAD, current)

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            now = _checked_revision(conn, cfg.where())  # another process may have done it
            if now == HEAD:
                return
        ctx = MigrationContext.configure(
            connection=conn, opts={"fn": upgrade, "target_metadata": metadata}
        )
        with Operations.context(ctx):
            ctx.run_migrations()
    if rev is None:
        logger.info("history %s: created (schema version %d)", cfg.where(), SCHEMA_VERSION)


def _backup(cfg: HistoryConfig, rev: str) -> Path | None:
    """A consistent copy of a SQLite history before it is migrated (PostgreSQL: none)."""
    if cfg.url is not None:
        return None
    path = cfg.path.expanduser()
    dest = path.with_name(f"{path.name}.v{version_of(rev)}.bak")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.v{version_of(rev)}.{n}.bak")
    src = sqlite3.connect(str(path), timeout=30)
    try:
        out = sqlite3.connect(str(dest))
        try:
            src.backup(out)
        finally:
            out.close()
    except sqlite3.Error as err:
        dest.unlink(missing_ok=True)
        raise HistoryError(f"{path}: cannot copy it before migrating: {err}") from err
    finally:
        src.close()
    return dest
