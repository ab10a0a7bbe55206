"""Webhooks (SPEC §10): the outbox, and a sealed copy of each account's auth token (to sign).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("service_sid", sa.String(34), nullable=False),
        sa.Column("resource_sid", sa.String(34), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("method", sa.String(4), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(3), nullable=False),
        sa.Column("client_identity", sa.Text(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("date_created", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "due_at"])
    op.create_index("ix_outbox_resource", "outbox", ["resource_sid", "id"])
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("auth_token_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("auth_token_enc")
    op.drop_index("ix_outbox_resource", "outbox")
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
