"""Config of the history store (``history:``): where episodes, moods and VA are kept.

    history:
      path: history.db                 # SQLite (the embedded default), or:
      # url: postgresql://streamer@db.example:5432/streamer
      # password_env: STREAMER_HISTORY_PASSWORD
      keep_days: 30
      keep_episode_days: 365

Off unless the section is set. Semantics in docs/history.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from streamer.config_base import StrictModel

DEFAULT_PATH = Path("history.db")
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")


def is_database_url(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL server rather than a SQLite file."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text) is not None


class HistoryConfig(StrictModel):
    """The history store: SQLite at ``path`` by default, PostgreSQL at ``url``."""

    path: Path = Field(
        DEFAULT_PATH,
        description="SQLite file (WAL) of the history; not used when `url` is set",
    )
    url: str | None = Field(
        None,
        description="PostgreSQL server instead of SQLite: postgresql://USER@HOST:PORT/DB "
        "(the password comes from `password_env`, never from the URL)",
    )
    password_env: str = Field(
        "STREAMER_HISTORY_PASSWORD",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the PostgreSQL password (unset: none, "
        "e.g. peer or trust authentication)",
    )
    va_hz: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="VA per track is kept in bins of 1/va_hz seconds (mean, min, max, n)",
    )
    commit_interval_s: float = Field(
        5.0,
        gt=0.0,
        le=300.0,
        description="one transaction per this many seconds (or per `commit_rows` rows)",
    )
    commit_rows: int = Field(
        2000, ge=1, le=1_000_000, description="a transaction is made early at this many rows"
    )
    max_queue_rows: int = Field(
        20000,
        ge=10,
        le=10_000_000,
        description="rows waiting for the database at most (a slow, locked or unreachable "
        "database): past it new rows are dropped and counted",
    )
    keep_days: float = Field(
        30.0,
        gt=0.0,
        le=36500.0,
        description="VA bins, descriptions, moods and camera statuses are pruned after this",
    )
    keep_episode_days: float = Field(
        365.0,
        gt=0.0,
        le=36500.0,
        description="episodes are pruned after this, except those marked `keep`",
    )
    prune_interval_s: float = Field(
        3600.0, ge=10.0, le=86400.0, description="how often retention runs in the background"
    )
    flush_timeout_s: float = Field(
        5.0,
        ge=0.0,
        le=600.0,
        description="at the end of a run, how long the last batch may take to be written "
        "(what is not written by then is dropped and counted)",
    )
    max_size_mb: float | None = Field(
        None,
        gt=0.0,
        description="SQLite only: the file never grows past this; reaching it stops the "
        "history for the run as a full disk does (one error line, /readyz says so)",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in POSTGRES_SCHEMES:
            raise ValueError(
                f"expected a postgresql://USER@HOST:PORT/DB URL, got scheme {parts.scheme!r} "
                "(for SQLite set `path`)"
            )
        if parts.password is not None:
            raise ValueError(
                "the URL holds a password: put it in the environment variable named by "
                "`password_env` instead"
            )
        if not parts.hostname:
            raise ValueError("the URL names no host")
        if not parts.path.strip("/"):
            raise ValueError("the URL names no database (postgresql://USER@HOST:PORT/DB)")
        return url

    @model_validator(mode="after")
    def _one_backend(self) -> HistoryConfig:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError("set either `path` (SQLite) or `url` (PostgreSQL), not both")
        if self.url is not None and self.max_size_mb is not None:
            raise ValueError("`max_size_mb` is for SQLite; PostgreSQL has its own quotas")
        return self

    @property
    def postgres(self) -> bool:
        return self.url is not None

    def password(self) -> str | None:
        """The PostgreSQL password from the environment, or None when unset or empty."""
        return os.environ.get(self.password_env) or None

    def where(self) -> str:
        """The database for log lines and errors: the file, or the URL (no password)."""
        return self.url if self.url is not None else str(self.path)

    @classmethod
    def at(cls, target: str) -> HistoryConfig:
        """The config of ``--history TARGET``: a SQLite path or a PostgreSQL URL."""
        if is_database_url(target):
            return cls(url=target)
        return cls(path=Path(target))
