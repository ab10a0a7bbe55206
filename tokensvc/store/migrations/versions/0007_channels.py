"""Channels and memberships (members and invites) of SPEC §8.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("service_sid", sa.String(34), sa.ForeignKey("services.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("friendly_name", sa.String(256), nullable=True),
        sa.Column("unique_name", sa.String(256), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=True),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("members_count", sa.Integer(), nullable=False),
        sa.Column("messages_count", sa.Integer(), nullable=False),
        sa.Column("date_created", sa.BigInteger(), nullable=False),
        sa.Column("date_updated", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("service_sid", "unique_name", name="uq_channels_service_unique_name"),
    )
    op.create_index("ix_channels_service_type_id", "channels", ["service_sid", "type", "id"])
    op.create_index("ix_channels_service_created_by", "channels", ["service_sid", "created_by"])
    op.create_table(
        "memberships",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("service_sid", sa.String(34), nullable=False),
        sa.Column("channel_sid", sa.String(34), sa.ForeignKey("channels.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("user_sid", sa.String(34), sa.ForeignKey("users.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("identity", sa.String(256), nullable=False),
        sa.Column("role_sid", sa.String(34), sa.ForeignKey("roles.sid", name="fk_memberships_role_sid"),
                  nullable=False),
        sa.Column("attributes", sa.Text(), nullable=True),
        sa.Column("last_consumed_message_index", sa.BigInteger(), nullable=True),
        sa.Column("last_consumption_timestamp", sa.BigInteger(), nullable=True),
        sa.Column("notification_level", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.Column("date_created", sa.BigInteger(), nullable=False),
        sa.Column("date_updated", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("channel_sid", "user_sid", name="uq_memberships_channel_user"),
    )
    op.create_index("ix_memberships_channel_status_id", "memberships", ["channel_sid", "status", "id"])
    op.create_index("ix_memberships_channel_identity", "memberships", ["channel_sid", "identity"])
    op.create_index("ix_memberships_user_id", "memberships", ["user_sid", "id"])
    op.create_index("ix_memberships_service_created_by", "memberships", ["service_sid", "created_by"])
    op.create_index("ix_memberships_role_sid", "memberships", ["role_sid"])


def downgrade() -> None:
    op.drop_table("memberships")
    op.drop_table("channels")
