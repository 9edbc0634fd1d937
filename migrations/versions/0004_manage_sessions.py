"""manage_sessions, and single-use connect sessions (completed_at, revoked_at)

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connect_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "manage_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("browser_binding", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_manage_sessions_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manage_sessions")),
    )
    with op.batch_alter_table("manage_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_manage_sessions_connection_id"), ["connection_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("manage_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manage_sessions_connection_id"))
    op.drop_table("manage_sessions")
    with op.batch_alter_table("connect_sessions", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("completed_at")
