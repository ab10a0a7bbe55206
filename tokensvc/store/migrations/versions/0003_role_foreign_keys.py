"""Foreign keys from users.role_sid and services.default_*_role_sid to roles.sid.

A user could hold a role that no longer exists: a role deleted while a user was being created
with it (PostgreSQL), or a first encounter given a default role that another process had just
switched away from and deleted. The database now refuses both. Rows left dangling by those
races are repaired first: a service's dangling default points at a role of the right type of
that service (by Twilio's default name first), a user's dangling role at its service's default
service role (a `service user` role is created where the service has no deployment role left).

NO ACTION, not RESTRICT: checked at the end of the statement, so deleting a service (which
cascades to its roles and users and removes the service row itself) still passes.

SQLite cannot add a constraint to a table: batch mode rebuilds users and services. The rebuild
drops the old table, which with foreign keys on would cascade to roles, users and connections,
so it runs with foreign keys off (schema.upgrade turns them off before its transaction, and
checks every constraint before it commits).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json
import secrets
import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SERVICE_DEFAULTS = (  # column, role type, Twilio's default role of that kind
    ("default_service_role_sid", "deployment", "service user"),
    ("default_channel_role_sid", "channel", "channel user"),
    ("default_channel_creator_role_sid", "channel", "channel admin"),
)
# Twilio's documented `service user` permissions, as roles.DEFAULT_ROLES held them at 0003.
_SERVICE_USER_PERMISSIONS = ["createChannel", "editOwnUserInfo", "joinChannel"]


def _foreign_keys_off(bind: sa.Connection) -> None:
    """SQLite: make sure the table rebuild cannot cascade (see the module docstring)."""
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: checked next
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("migration 0003 rebuilds tables and must run with SQLite foreign keys off: "
                           "run it through `tokensvc db upgrade`")


def _repair(bind: sa.Connection) -> None:
    for column, type, name in _SERVICE_DEFAULTS:
        bind.execute(sa.text(
            f"UPDATE services SET {column} = ("
            "  SELECT r.sid FROM roles r WHERE r.service_sid = services.sid AND r.type = :type"
            "  ORDER BY CASE WHEN r.friendly_name = :name THEN 0 ELSE 1 END, r.id LIMIT 1) "
            f"WHERE {column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM roles r WHERE r.sid = services.{column})"),
            {"type": type, "name": name})
    # A service with dangling users but no deployment role left gets Twilio's `service user`.
    orphaned = bind.execute(sa.text(
        "SELECT DISTINCT s.sid, s.account_sid FROM services s JOIN users u ON u.service_sid = s.sid "
        "WHERE s.default_service_role_sid IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM roles r WHERE r.sid = u.role_sid)")).all()
    for service_sid, account_sid in orphaned:
        sid, ts = "RL" + secrets.token_hex(16), int(time.time())
        bind.execute(sa.text(
            "INSERT INTO roles (sid, account_sid, service_sid, friendly_name, type, permissions, date_created, "
            "date_updated) VALUES (:sid, :account, :service, 'service user', 'deployment', :perms, :ts, :ts)"),
            {"sid": sid, "account": account_sid, "service": service_sid,
             "perms": json.dumps(_SERVICE_USER_PERMISSIONS), "ts": ts})
        bind.execute(sa.text("UPDATE services SET default_service_role_sid = :sid WHERE sid = :service"),
                     {"sid": sid, "service": service_sid})
    bind.execute(sa.text(
        "UPDATE users SET role_sid = ("
        "  SELECT s.default_service_role_sid FROM services s WHERE s.sid = users.service_sid) "
        "WHERE NOT EXISTS (SELECT 1 FROM roles r WHERE r.sid = users.role_sid)"))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _foreign_keys_off(bind)
    _repair(bind)
    with op.batch_alter_table("users") as batch:
        batch.create_foreign_key("fk_users_role_sid", "roles", ["role_sid"], ["sid"])
    with op.batch_alter_table("services") as batch:
        for column, _, _ in _SERVICE_DEFAULTS:
            batch.create_foreign_key(f"fk_services_{column}", "roles", [column], ["sid"])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _foreign_keys_off(bind)
    with op.batch_alter_table("services") as batch:
        for column, _, _ in _SERVICE_DEFAULTS:
            batch.drop_constraint(f"fk_services_{column}", type_="foreignkey")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("fk_users_role_sid", type_="foreignkey")
