"""Tombstones of deleted identities: a token issued before a user's deletion must not re-create it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tombstones",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("deleted_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_tombstones_expires_at", "tombstones", ["expires_at"])


def downgrade() -> None:
    op.drop_table("tombstones")
