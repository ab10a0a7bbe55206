"""Channels of a service (SPEC §8): the SQL, and the resource's JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.exc import IntegrityError

from .. import errors
from ..db import first_row, is_foreign_key_violation, now
from ..paging import Page, PageRequest, fetch_page
from ..sids import is_sid, new_sid
from .channel_tables import channels, memberships
from .tables import users

SYSTEM = "system"  # created_by of a channel made with Basic credentials, or whose creator is gone


def is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)


def insert_channel(conn: Connection, *, service: Mapping[str, Any], friendly_name: str | None,
                   unique_name: str | None, attributes: str | None, type: str, created_by: str,
                   date_created: int | None, date_updated: int | None) -> Mapping[str, Any]:
    """A new channel; 409 50307 when the unique name is taken, decided by the unique constraint."""
    ts = now()
    row = {
        "sid": new_sid("CH"), "account_sid": service["account_sid"], "service_sid": service["sid"],
        "friendly_name": friendly_name, "unique_name": unique_name, "attributes": attributes, "type": type,
        "created_by": created_by, "members_count": 0, "messages_count": 0,
        "date_created": date_created if date_created is not None else ts,
        "date_updated": date_updated if date_updated is not None else (date_created or ts),
    }
    try:
        conn.execute(channels.insert().values(**row))
    except IntegrityError as exc:
        raise _write_error(exc) from None
    return get_channel(conn, service_sid=service["sid"], key=row["sid"])


def _write_error(exc: IntegrityError) -> Exception:
    if is_unique_violation(exc):
        return errors.unique_name_taken()
    if is_foreign_key_violation(exc):  # the service, deleted by a concurrent request
        return errors.not_found()
    return exc


def get_channel(conn: Connection, *, service_sid: str, key: str, lock: bool = False) -> Mapping[str, Any]:
    """A channel by CH SID or unique name; 404 when there is none. `lock`: the row stays locked
    until the transaction ends (PostgreSQL; SQLite writers are serialized anyway), so member
    adds and removals of one channel take turns and its count stays exact."""
    if "\x00" in key:
        raise errors.not_found()
    column = channels.c.sid if is_sid("CH", key) else channels.c.unique_name
    stmt = select(channels).where(channels.c.service_sid == service_sid, column == key)
    if lock:
        stmt = stmt.with_for_update()
    row = first_row(conn.execute(stmt))
    if row is None:
        raise errors.not_found()
    return row


def list_channels(conn: Connection, *, service_sid: str, types: Sequence[str], req: PageRequest,
                  member_of: str | None = None) -> Page:
    """Channels of these types in creation order; with `member_of` (a client's user SID) the
    private ones only where that user is a member or invited."""
    stmt = select(channels).where(channels.c.service_sid == service_sid, channels.c.type.in_(list(types)))
    if member_of is not None:
        mine = select(memberships.c.channel_sid).where(memberships.c.user_sid == member_of)
        stmt = stmt.where(or_(channels.c.type == "public", channels.c.sid.in_(mine)))
    return fetch_page(conn, stmt, channels.c.id, req)


def update_channel(conn: Connection, *, channel: Mapping[str, Any], values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Apply parsed changes (columns of channels); date_updated is now unless given."""
    changes = dict(values)
    changes.setdefault("date_updated", now())
    try:
        conn.execute(channels.update().where(channels.c.sid == channel["sid"]).values(**changes))
    except IntegrityError as exc:
        raise _write_error(exc) from None
    return get_channel(conn, service_sid=channel["service_sid"], key=channel["sid"])


def delete_channel(conn: Connection, *, channel: Mapping[str, Any]) -> None:
    """Delete the channel with its members and invites, each member's user counting one channel
    less, in this transaction. Users are updated in SID order (two deletes cannot deadlock)."""
    joined = select(memberships.c.user_sid).where(memberships.c.channel_sid == channel["sid"],
                                                  memberships.c.status == "joined")
    user_sids = sorted(conn.execute(joined).scalars())
    for start in range(0, len(user_sids), 500):
        conn.execute(update(users).where(users.c.sid.in_(user_sids[start:start + 500]))
                     .values(joined_channels_count=users.c.joined_channels_count - 1))
    conn.execute(memberships.delete().where(memberships.c.channel_sid == channel["sid"]))
    if not conn.execute(channels.delete().where(channels.c.sid == channel["sid"])).rowcount:
        raise errors.not_found()  # a concurrent request deleted it after we read it


def forget_creator(conn: Connection, *, service_sid: str, identity: str) -> None:
    """A deleted user's identity leaves every channel and invite it created (SPEC §8)."""
    conn.execute(channels.update().where(channels.c.service_sid == service_sid, channels.c.created_by == identity)
                 .values(created_by=SYSTEM))
    conn.execute(memberships.update().where(memberships.c.service_sid == service_sid,
                                            memberships.c.created_by == identity).values(created_by=SYSTEM))


def delete_service_channels(conn: Connection, *, service_sid: str) -> None:
    """Before a service is deleted: its memberships and channels. The cascade from services
    would reach memberships only through channels and users, after PostgreSQL has checked that
    no membership still holds one of the service's (cascaded) roles."""
    conn.execute(memberships.delete().where(memberships.c.service_sid == service_sid))
    conn.execute(channels.delete().where(channels.c.service_sid == service_sid))
