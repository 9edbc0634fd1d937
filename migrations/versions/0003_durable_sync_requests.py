"""durable sync requests: connections.sync_requested_at (+ trigger, reconcile)

A request that answered 202 is recorded in the database in the same transaction; the broker
message is only a wake-up, so a broker outage at that moment loses nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sync_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("sync_requested_trigger", sa.String(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("sync_requested_reconcile", sa.Boolean(), server_default="0", nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_connections_sync_requested_at"), ["sync_requested_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connections_sync_requested_at"))
        batch_op.drop_column("sync_requested_reconcile")
        batch_op.drop_column("sync_requested_trigger")
        batch_op.drop_column("sync_requested_at")
