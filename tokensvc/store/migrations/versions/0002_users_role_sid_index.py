"""Index users.role_sid: deleting a role asks whether any user still holds it.

Without the index that question (roles.delete_role) reads every user of every service.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_role_sid", "users", ["role_sid"])


def downgrade() -> None:
    op.drop_index("ix_users_role_sid", table_name="users")
