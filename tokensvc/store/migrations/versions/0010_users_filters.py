"""Users list filters (SPEC §11): an index range for each, and identities in byte order.

- `ix_users_role_id (role_sid, id)`: RoleSid in creation order; it replaces `ix_users_role_sid`
  (0002), which answered only "does any user hold this role".
- `ix_users_service_updated (service_sid, date_updated, sid)`: UpdatedAfter in (date_updated,
  sid) order.
- PostgreSQL: `users.identity` collated "C". IdentityPrefix is the range `prefix <= identity <
  end` of `uq_users_service_identity`, exact only in code point order (UTF-8 byte order, which
  is SQLite's BINARY); a database created with a locale such as en_US orders "B" between "a"
  and "b". Uniqueness is unchanged: equality is byte equality under every deterministic
  collation. The unique index is rebuilt (seconds per million users; the table is not rewritten).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_role_id", "users", ["role_sid", "id"])
    op.drop_index("ix_users_role_sid", table_name="users")
    op.create_index("ix_users_service_updated", "users", ["service_sid", "date_updated", "sid"])
    if op.get_context().dialect.name == "postgresql":
        op.alter_column("users", "identity", type_=sa.String(256, collation="C"),
                        existing_type=sa.String(256), existing_nullable=False)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.alter_column("users", "identity", type_=sa.String(256), existing_type=sa.String(256, collation="C"),
                        existing_nullable=False)
    op.drop_index("ix_users_service_updated", table_name="users")
    op.create_index("ix_users_role_sid", "users", ["role_sid"])
    op.drop_index("ix_users_role_id", table_name="users")
