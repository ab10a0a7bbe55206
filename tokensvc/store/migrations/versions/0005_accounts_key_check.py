"""accounts.key_check: which keys/secrets.key the processes serving an account use.

`secrets.key` now also keys the tombstones' digests and seals PageTokens, so two replicas with
different files disagree even on a database without any API key (whose stored secrets were the
only check before): `tokensvc serve` records a check value of its key on the bootstrap account
and refuses to start when it finds another one.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("key_check", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("key_check")
