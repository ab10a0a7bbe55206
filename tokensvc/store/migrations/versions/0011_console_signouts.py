"""console_signouts: a console sign-out ends the session on the server, not only in the browser.

Console sessions are signed cookies (console/session.py). Until now signing out removed the
cookie from the browser, and a copy taken before stayed valid until it idled out. A row here
(the SHA-256 of the session's nonce, until the session would have expired) ends it on every
replica.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_signouts",
        sa.Column("nonce_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_console_signouts_expires_at", "console_signouts", ["expires_at"])


def downgrade() -> None:
    op.drop_table("console_signouts")
