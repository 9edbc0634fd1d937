"""the webhook flood limit counts an account's deliveries of the last minute in the database
(it was a Redis counter on the request path)

Revision ID: 0010
Revises: 0003
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_deliveries_account_id_received_at",
        "webhook_deliveries",
        ["account_id", "received_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_account_id_received_at", table_name="webhook_deliveries")
