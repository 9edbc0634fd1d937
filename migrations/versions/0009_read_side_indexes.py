"""indexes for the read side at 100,000 connections: connections by status, links by state,
the dashboard's sync_runs polling by status and queued_at

Revision ID: 0009
Revises: 0002
Create Date: 2026-11-26 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_connections_status", "connections", ["status"])
    op.create_index("ix_synced_links_state_updated_at", "synced_links", ["state", "updated_at"])
    op.create_index("ix_sync_runs_status_queued_at", "sync_runs", ["status", "queued_at"])
    op.create_index("ix_sync_runs_queued_at", "sync_runs", ["queued_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_runs_queued_at", table_name="sync_runs")
    op.drop_index("ix_sync_runs_status_queued_at", table_name="sync_runs")
    op.drop_index("ix_synced_links_state_updated_at", table_name="synced_links")
    op.drop_index("ix_connections_status", table_name="connections")
