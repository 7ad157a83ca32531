"""Schema 2: review (an episode can be marked reviewed, and kept from retention).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("episodes", sa.Column("reviewed_at", sa.Float))
    op.add_column(
        "episodes", sa.Column("keep", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.create_index("ix_episodes_reviewed_at", "episodes", ["reviewed_at"])


def downgrade() -> None:
    op.drop_index("ix_episodes_reviewed_at", table_name="episodes")
    with op.batch_alter_table("episodes") as batch:
        batch.drop_column("keep")
        batch.drop_column("reviewed_at")
