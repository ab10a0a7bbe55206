"""kicks: one signal between processes for "close the sessions that stand on this".

Until now a process learnt of a user deleted elsewhere only when its heartbeat found the user's
connection rows gone, and of an API key deleted elsewhere by polling the keys of its sessions.
A row here (written in the deleting transaction) reaches every process's Hub within its poll.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kicks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sid", sa.String(34), nullable=False),
        sa.Column("service_sid", sa.String(34), nullable=True),
        sa.Column("date_created", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,  # ids of pruned rows are never handed out again
    )
    op.create_index("ix_kicks_date_created", "kicks", ["date_created"])


def downgrade() -> None:
    op.drop_table("kicks")
