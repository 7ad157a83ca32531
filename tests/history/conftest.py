"""Fixtures of the history tests: a real PostgreSQL server (Debian's binaries, in a
temporary directory, on a free loopback port), skipped with the reason where it cannot
run; the history of a real replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.postgres import PostgresServer, postgres_unavailable

EPISODE_RULES = """\
episodes:
  rules:
    - name: low
      when: {valence_below: 0.3}
      for_s: 0.5
      clear_after_s: 0.3
    - name: high
      when: {arousal_above: -0.5}
      for_s: 0.3
      clear_after_s: 0.2
  max_variance: 0.5
mood:
  enabled: true
  interval_s: 1
"""


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (tests use a database each)."""
    why = postgres_unavailable()
    if why is not None:
        pytest.skip(f"PostgreSQL unavailable: {why}")
    with PostgresServer() as srv:
        yield srv


@pytest.fixture
def pg_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server."""
    import sqlalchemy as sa

    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:50].lower()
    admin = sa.create_engine(
        pg_server.url.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return pg_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def rules_config(tmp_path: Path) -> Path:
    """A config whose episode rules fire on single_face.mp4, and room mood."""
    path = tmp_path / "rules.yaml"
    path.write_text(EPISODE_RULES)
    return path
