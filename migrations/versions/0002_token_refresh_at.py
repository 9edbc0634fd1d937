"""token_refresh_at: refresh ahead of expiry by a margin capped at a quarter of the lifetime

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 02:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("token_refresh_at", sa.DateTime(timezone=True), nullable=True)
        )
    # Existing tokens: refresh them when they expire (or on the first 401, whichever is first).
    op.execute(
        "UPDATE connections SET token_refresh_at = token_expires_at WHERE token_expires_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("token_refresh_at")
