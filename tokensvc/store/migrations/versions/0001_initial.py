"""The initial schema: accounts, API keys, services, roles, users, connections.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _dates() -> list[sa.Column]:
    return [sa.Column("date_created", sa.BigInteger(), nullable=False),
            sa.Column("date_updated", sa.BigInteger(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("friendly_name", sa.String(256), nullable=False),
        sa.Column("auth_token_hash", sa.String(64), nullable=False),
        *_dates(),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("friendly_name", sa.String(256), nullable=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        *_dates(),
    )
    op.create_index("ix_api_keys_account_sid", "api_keys", ["account_sid"])
    op.create_table(
        "services",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("friendly_name", sa.String(256), nullable=True),
        sa.Column("default_service_role_sid", sa.String(34), nullable=True),
        sa.Column("default_channel_role_sid", sa.String(34), nullable=True),
        sa.Column("default_channel_creator_role_sid", sa.String(34), nullable=True),
        sa.Column("read_status_enabled", sa.Boolean(), nullable=False),
        sa.Column("reachability_enabled", sa.Boolean(), nullable=False),
        sa.Column("typing_indicator_timeout", sa.Integer(), nullable=False),
        sa.Column("consumption_report_interval", sa.Integer(), nullable=False),
        sa.Column("pre_webhook_url", sa.Text(), nullable=True),
        sa.Column("post_webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_method", sa.String(8), nullable=False),
        sa.Column("pre_webhook_retry_count", sa.Integer(), nullable=False),
        sa.Column("post_webhook_retry_count", sa.Integer(), nullable=False),
        sa.Column("webhook_filters", sa.Text(), nullable=False),
        sa.Column("limits", sa.Text(), nullable=False),
        sa.Column("notifications", sa.Text(), nullable=False),
        sa.Column("media", sa.Text(), nullable=False),
        *_dates(),
    )
    op.create_index("ix_services_account_sid", "services", ["account_sid"])
    op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("service_sid", sa.String(34), sa.ForeignKey("services.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("friendly_name", sa.String(256), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),
        *_dates(),
    )
    op.create_index("ix_roles_service_sid", "roles", ["service_sid"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("service_sid", sa.String(34), sa.ForeignKey("services.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("role_sid", sa.String(34), nullable=False),
        sa.Column("identity", sa.String(256), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=True),
        sa.Column("friendly_name", sa.String(256), nullable=True),
        sa.Column("joined_channels_count", sa.Integer(), nullable=False),
        sa.Column("was_online", sa.Boolean(), nullable=False),
        *_dates(),
        sa.UniqueConstraint("service_sid", "identity", name="uq_users_service_identity"),
    )
    op.create_index("ix_users_service_id", "users", ["service_sid", "id"])
    op.create_table(
        "connections",
        sa.Column("id", sa.String(34), primary_key=True),
        sa.Column("user_sid", sa.String(34), sa.ForeignKey("users.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("service_sid", sa.String(34), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("heartbeat_at", sa.BigInteger(), nullable=False),
        sa.Column("date_created", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_connections_node", "connections", ["node"])
    op.create_index("ix_connections_user_heartbeat", "connections", ["user_sid", "heartbeat_at"])


def downgrade() -> None:
    for table in ("connections", "users", "roles", "services", "api_keys", "accounts"):
        op.drop_table(table)
