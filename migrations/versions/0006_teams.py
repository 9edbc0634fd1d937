"""teams: member connections, the team roster, our shared links and their mappings

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ADMIN_ONLY = sa.text("member_id IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("member_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("email_warning", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("manage_customizations", sa.Boolean(), nullable=True))
        batch_op.drop_constraint("uq_connections_account_id", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_connections_account_id"), ["account_id", "member_id"]
        )
    op.create_index(
        "uq_connections_admin_account_id",
        "connections",
        ["account_id"],
        unique=True,
        sqlite_where=ADMIN_ONLY,
        postgresql_where=ADMIN_ONLY,
    )
    with op.batch_alter_table("connect_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("member_id", sa.String(length=255), nullable=True))

    op.create_table(
        "team_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("member_id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("close_user_id", sa.String(length=255), nullable=True),
        sa.Column("close_user_name", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_members")),
        sa.UniqueConstraint("account_id", "member_id", name=op.f("uq_team_members_account_id")),
    )
    op.create_table(
        "shared_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("event_type_id", sa.String(length=255), nullable=False),
        sa.Column("close_shared_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shared_links")),
        sa.UniqueConstraint("account_id", "event_type_id", name=op.f("uq_shared_links_account_id")),
    )
    op.create_table(
        "shared_link_mappings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shared_link_id", sa.Integer(), nullable=False),
        sa.Column("close_user_id", sa.String(length=255), nullable=False),
        sa.Column("member_id", sa.String(length=255), nullable=False),
        sa.Column("target_kind", sa.String(length=32), nullable=False),
        sa.Column("target_value", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shared_link_id"],
            ["shared_links.id"],
            name=op.f("fk_shared_link_mappings_shared_link_id_shared_links"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shared_link_mappings")),
        sa.UniqueConstraint(
            "shared_link_id", "close_user_id", name=op.f("uq_shared_link_mappings_shared_link_id")
        ),
    )
    with op.batch_alter_table("shared_link_mappings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shared_link_mappings_shared_link_id"), ["shared_link_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("shared_link_mappings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shared_link_mappings_shared_link_id"))
    op.drop_table("shared_link_mappings")
    op.drop_table("shared_links")
    op.drop_table("team_members")
    with op.batch_alter_table("connect_sessions", schema=None) as batch_op:
        batch_op.drop_column("member_id")
    op.drop_index("uq_connections_admin_account_id", table_name="connections")
    # Member connections cannot survive without their column: only admin connections remain.
    op.execute("DELETE FROM connections WHERE member_id IS NOT NULL")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_constraint("uq_connections_account_id", type_="unique")
        batch_op.create_unique_constraint("uq_connections_account_id", ["account_id"])
        batch_op.drop_column("manage_customizations")
        batch_op.drop_column("email_warning")
        batch_op.drop_column("member_id")
