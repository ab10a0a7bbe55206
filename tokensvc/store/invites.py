"""Invites (SPEC §8): memberships rows with status `invited` (store/channel_tables.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from .. import errors
from ..db import first_row, is_foreign_key_violation, now
from ..sids import is_sid, new_sid
from .channel_tables import memberships
from .channels import is_unique_violation
from .members import INVITED, JOINED, membership_of


def _taken(found: Mapping[str, Any]) -> Exception:
    return errors.already_member() if found["status"] == JOINED else errors.already_invited()


def create_invite(conn: Connection, *, service: Mapping[str, Any], channel: Mapping[str, Any],
                  user: Mapping[str, Any], role_sid: str | None, created_by: str) -> Mapping[str, Any]:
    """Invite an existing user into the locked channel: 409 50404 when it is a member, 50212
    when it is invited already (decided by the unique constraint on a lost race too)."""
    found = membership_of(conn, channel_sid=channel["sid"], user_sid=user["sid"])
    if found is not None:
        raise _taken(found)
    ts = now()
    row = {
        "sid": new_sid("IN"), "status": INVITED, "account_sid": channel["account_sid"],
        "service_sid": channel["service_sid"], "channel_sid": channel["sid"], "user_sid": user["sid"],
        "identity": user["identity"], "role_sid": role_sid or service["default_channel_role_sid"],
        "attributes": None, "last_consumed_message_index": None, "last_consumption_timestamp": None,
        "notification_level": "default", "created_by": created_by, "date_created": ts, "date_updated": ts,
    }
    try:
        conn.execute(memberships.insert().values(**row))
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise errors.already_invited() from None
        if is_foreign_key_violation(exc):  # the user or the channel, deleted meanwhile
            raise errors.not_found() from None
        raise
    return get_invite(conn, channel=channel, key=row["sid"])


def get_invite(conn: Connection, *, channel: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A pending invite of the channel by IN SID; 404 otherwise."""
    if not is_sid("IN", key):
        raise errors.not_found()
    row = first_row(conn.execute(select(memberships).where(
        memberships.c.channel_sid == channel["sid"], memberships.c.status == INVITED, memberships.c.sid == key)))
    if row is None:
        raise errors.not_found()
    return row
