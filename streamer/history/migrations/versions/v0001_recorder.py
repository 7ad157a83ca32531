"""Schema 1: the recorder (runs, episodes, descriptions, camera status, VA and mood).

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("source", sa.String(1024)),
        sa.Column("cameras", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
    )
    op.create_table(
        "episodes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("episode_id", sa.String(512), nullable=False),
        sa.Column("camera", sa.String(256), nullable=False),
        sa.Column("track_id", sa.Integer, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
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
        sa.Column("wall_time", sa.Float),
        sa.Column("wall_start", sa.Float, nullable=False),
        sa.Column("wall_end", sa.Float),
        sa.Column("description", sa.Text),
        sa.UniqueConstraint("run_id", "episode_id", name="uq_episodes_run_episode"),
    )
    op.create_index("ix_episodes_camera_wall_start", "episodes", ["camera", "wall_start"])
    op.create_index("ix_episodes_wall_start", "episodes", ["wall_start"])
    op.create_table(
        "descriptions",
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
        sa.Column("complex", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("episode_id", sa.String(512)),
        sa.UniqueConstraint("run_id", "description_id", name="uq_descriptions_run_description"),
    )
    op.create_index("ix_descriptions_camera_wall", "descriptions", ["camera", "wall"])
    op.create_index("ix_descriptions_wall", "descriptions", ["wall"])
    op.create_table(
        "camera_status",
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
    )
    op.create_index("ix_camera_status_camera_wall", "camera_status", ["camera", "wall_time"])
    op.create_index("ix_camera_status_wall", "camera_status", ["wall_time"])
    op.create_table(
        "va_segments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("camera", sa.String(256), nullable=False),
        sa.Column("track_id", sa.Integer, nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("bin_s", sa.Float, nullable=False),
        sa.Column("bins", sa.Integer, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("valence_mean", sa.Float, nullable=False),
        sa.Column("arousal_mean", sa.Float, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("run_id", "camera", "track_id", "start", name="uq_va_segments_key"),
    )
    op.create_index("ix_va_segments_camera_start", "va_segments", ["camera", "start"])
    op.create_index("ix_va_segments_start", "va_segments", ["start"])
    op.create_table(
        "mood_segments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("camera", sa.String(256), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("run_id", "camera", "start", name="uq_mood_segments_key"),
    )
    op.create_index("ix_mood_segments_camera_start", "mood_segments", ["camera", "start"])
    op.create_index("ix_mood_segments_start", "mood_segments", ["start"])


def downgrade() -> None:
    for table in (
        "mood_segments",
        "va_segments",
        "camera_status",
        "descriptions",
        "episodes",
        "runs",
    ):
        op.drop_table(table)
