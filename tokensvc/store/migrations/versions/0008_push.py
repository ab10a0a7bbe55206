"""Push (SPEC §9): credentials, bindings, and users.notifiable (null until a first binding).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _dates() -> list[sa.Column]:
    return [sa.Column("date_created", sa.BigInteger(), nullable=False),
            sa.Column("date_updated", sa.BigInteger(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("friendly_name", sa.String(64), nullable=True),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("sandbox", sa.Boolean(), nullable=True),
        sa.Column("secrets_enc", sa.Text(), nullable=False),
        *_dates(),
    )
    op.create_index("ix_credentials_account_id", "credentials", ["account_sid", "id"])
    op.create_table(
        "bindings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False, unique=True),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("service_sid", sa.String(34), sa.ForeignKey("services.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("user_sid", sa.String(34), sa.ForeignKey("users.sid", ondelete="CASCADE"), nullable=False),
        sa.Column("credential_sid", sa.String(34), sa.ForeignKey("credentials.sid", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("endpoint", sa.String(256), nullable=False),
        sa.Column("binding_type", sa.String(8), nullable=False),
        sa.Column("address_enc", sa.Text(), nullable=False),
        *_dates(),
        sa.UniqueConstraint("user_sid", "endpoint", "binding_type", name="uq_bindings_user_endpoint_type"),
    )
    op.create_index("ix_bindings_service_id", "bindings", ["service_sid", "id"])
    op.create_index("ix_bindings_user_id", "bindings", ["user_sid", "id"])
    op.create_index("ix_bindings_credential_sid", "bindings", ["credential_sid"])
    op.add_column("users", sa.Column("notifiable", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("notifiable")
    op.drop_table("bindings")
    op.drop_table("credentials")
