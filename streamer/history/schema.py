"""The history's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

The schema is versioned by Alembic migrations (``streamer/history/migrations``): these
tables are what the newest one, :data:`HEAD`, makes; the migrations themselves are
frozen copies and never import this module. A row of every table belongs to a *run*
(one ``streamer run``, cluster actor or replay): track ids and media times restart with
each run, so ``(run_id, episode_id)`` is what names an episode for good, and the
integer ``id`` is the handle the review API and the CLI use.

Times: ``t*`` are media seconds (as in the live messages); ``wall*`` are UNIX seconds.
A replay has no wall clock: its rows are placed at the replay's start plus media time
(and its records carry no ``wall_time``, as the replay's own JSON lines).
"""

from __future__ import annotations

import sqlalchemy as sa

HEAD = "0002"  # the newest schema revision (Alembic's version_num)
REVISIONS = ("0001", "0002")  # every revision, oldest first


def version_of(revision: str) -> int:
    """The schema version a revision id stands for (``"0002"`` -> 2)."""
    return int(revision) if revision.isdigit() else -1


SCHEMA_VERSION = version_of(HEAD)

# Integer keys that grow for good: BIGINT on PostgreSQL, SQLite's rowid alias there.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # live | replay
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("source", sa.String(1024)),  # a replay's file name
    sa.Column("cameras", sa.Text, nullable=False),  # JSON list
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),  # the run's last commit
    sa.Column("ended_at", sa.Float),  # a clean end; null: running, or killed
)

episodes = sa.Table(
    "episodes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("episode_id", sa.String(512), nullable=False),
    sa.Column("camera", sa.String(256), nullable=False),
    sa.Column("track_id", sa.Integer, nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # started | ended
    sa.Column("t", sa.Float, nullable=False),
    sa.Column("frame", sa.BigInteger, nullable=False),
    sa.Column("t_start", sa.Float, nullable=False),
    sa.Column("t_end", sa.Float),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("reason", sa.String(32)),
    sa.Column("valence_mean", sa.Float, nullable=False),
    sa.Column("valence_min", sa.Float, nullable=False),
    sa.Column("valence_max", sa.Float, nullable=False),
    sa.Column("arousal_mean", sa.Float, nullable=False),
    sa.Column("arousal_min", sa.Float, nullable=False),
    sa.Column("arousal_max", sa.Float, nullable=False),
    sa.Column("wall_time", sa.Float),  # the message's (null in a replay)
    sa.Column("wall_start", sa.Float, nullable=False),
    sa.Column("wall_end", sa.Float),
    sa.Column("description", sa.Text),  # JSON: the latest description of the episode
    sa.Column("reviewed_at", sa.Float),  # 0002
    sa.Column("keep", sa.Boolean, nullable=False, server_default=sa.false()),  # 0002
    sa.UniqueConstraint("run_id", "episode_id", name="uq_episodes_run_episode"),
    sa.Index("ix_episodes_camera_wall_start", "camera", "wall_start"),
    sa.Index("ix_episodes_wall_start", "wall_start"),
    sa.Index("ix_episodes_reviewed_at", "reviewed_at"),  # 0002
)

descriptions = sa.Table(
    "descriptions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("description_id", sa.String(512), nullable=False),
    sa.Column("camera", sa.String(256), nullable=False),
    sa.Column("track_id", sa.Integer, nullable=False),
    sa.Column("t", sa.Float, nullable=False),
    sa.Column("wall", sa.Float, nullable=False),
    sa.Column("wall_time", sa.Float),
    sa.Column("valence", sa.Float, nullable=False),
    sa.Column("arousal", sa.Float, nullable=False),
    sa.Column("basic", sa.String(64), nullable=False),
    sa.Column("complex", sa.Text, nullable=False),  # JSON list
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # fallback | llm
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("episode_id", sa.String(512)),
    sa.UniqueConstraint("run_id", "description_id", name="uq_descriptions_run_description"),
    sa.Index("ix_descriptions_camera_wall", "camera", "wall"),
    sa.Index("ix_descriptions_wall", "wall"),
)

camera_status = sa.Table(
    "camera_status",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("camera", sa.String(256), nullable=False),
    sa.Column("wall_time", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("frames", sa.BigInteger, nullable=False),
    sa.Column("skipped", sa.BigInteger, nullable=False),
    sa.Column("reconnects", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Index("ix_camera_status_camera_wall", "camera", "wall_time"),
    sa.Index("ix_camera_status_wall", "wall_time"),
)

va_segments = sa.Table(
    "va_segments",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("camera", sa.String(256), nullable=False),
    sa.Column("track_id", sa.Integer, nullable=False),
    sa.Column("start", sa.Float, nullable=False),  # wall seconds, a multiple of SEGMENT_S
    sa.Column("bin_s", sa.Float, nullable=False),
    sa.Column("bins", sa.Integer, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("valence_mean", sa.Float, nullable=False),
    sa.Column("arousal_mean", sa.Float, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # segments.py
    sa.UniqueConstraint("run_id", "camera", "track_id", "start", name="uq_va_segments_key"),
    sa.Index("ix_va_segments_camera_start", "camera", "start"),
    sa.Index("ix_va_segments_start", "start"),
)

mood_segments = sa.Table(
    "mood_segments",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("camera", sa.String(256), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("entries", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # segments.py
    sa.UniqueConstraint("run_id", "camera", "start", name="uq_mood_segments_key"),
    sa.Index("ix_mood_segments_camera_start", "camera", "start"),
    sa.Index("ix_mood_segments_start", "start"),
)

# Tables whose rows belong to one time (pruned by `keep_days`), with that time's column.
TIMED = {
    "descriptions": (descriptions, descriptions.c.wall),
    "camera_status": (camera_status, camera_status.c.wall_time),
    "va_segments": (va_segments, va_segments.c.start),
    "mood_segments": (mood_segments, mood_segments.c.start),
}
TABLES = (runs, episodes, descriptions, camera_status, va_segments, mood_segments)
