"""Members and User Channels (SPEC §8): the SQL of joining, leaving and their counts.

Every joined row's insert and delete changes `channels.members_count` and
`users.joined_channels_count` in its own transaction. Lock order, so that concurrent writers
cannot deadlock in the usual cases: the channel row first (store.channels.get_channel(lock=True)),
then the user row. Deleting a user (which touches all its channels) locks the user first; the
rare deadlock that leaves with a concurrent channel or member delete is retried by the use case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Boolean, Connection, Integer, select, update
from sqlalchemy.exc import IntegrityError

from .. import errors
from ..db import DriverSQL, driver_rows, first_row, is_foreign_key_violation, now
from ..paging import Page, PageRequest, fetch_page
from ..sids import is_sid, new_sid
from .channel_tables import channels, memberships
from .channels import is_unique_violation
from .tables import services, users

JOINED, INVITED = "joined", "invited"


def membership_of(conn: Connection, *, channel_sid: str, user_sid: str) -> Mapping[str, Any] | None:
    """The user's row in the channel (joined or invited), or None."""
    return first_row(conn.execute(select(memberships).where(memberships.c.channel_sid == channel_sid,
                                                            memberships.c.user_sid == user_sid)))


# ---- The member add's statements (SPEC §8), on the driver's cursor: a member add is a write
# transaction of its own, and SQLAlchemy's per-statement work cost more than the statements.

def _columns(table: Any, prefix: str = "") -> str:
    return ", ".join(f"{table.name}.{c.name}" + (f" AS {prefix}{c.name}" if prefix else "") for c in table.c)


def _booleans(table: Any, prefix: str = "") -> frozenset[str]:
    return frozenset(prefix + c.name for c in table.c if isinstance(c.type, Boolean))


_SVC, _MB = "svc_", "mb_"


def _target_sql(key_column: str) -> DriverSQL:
    sql = (f"SELECT {_columns(channels)}, {_columns(services, _SVC)} FROM channels "
           "JOIN services ON services.sid = channels.service_sid "
           f"WHERE channels.service_sid = :service_sid AND channels.{key_column} = :key "
           "AND services.account_sid = :account_sid")
    # The channel row stays locked to the end of the transaction (SQLite: BEGIN IMMEDIATE has
    # serialized the writers already).
    return DriverSQL.of(sql, postgresql=sql + " FOR UPDATE OF channels")


_TARGET = {"sid": _target_sql("sid"), "unique_name": _target_sql("unique_name")}
_TARGET_BOOLEANS = _booleans(services, _SVC)
# Read after the lock is held (a statement of its own: PostgreSQL's READ COMMITTED then sees
# every member add and invite of this channel that committed before it).
_JOINER = DriverSQL.of(
    f"SELECT {_columns(users)}, {_columns(memberships, _MB)} FROM users "
    "LEFT JOIN memberships ON memberships.channel_sid = :channel_sid AND memberships.user_sid = users.sid "
    "WHERE users.service_sid = :service_sid AND users.identity = :identity")
_JOINER_BOOLEANS = _booleans(users)
_MEMBER_COLUMNS = [c.name for c in memberships.c if c.name != "id"]


def _pg_type(column: Any) -> str:
    """The base type a value is cast to (never a length: CAST(x AS VARCHAR(n)) would truncate
    where an insert refuses)."""
    return "BIGINT" if isinstance(column.type, Integer) else "TEXT"


_COUNT_USER = ("UPDATE users SET joined_channels_count = joined_channels_count + 1 "
               "WHERE sid = :user_sid AND joined_channels_count < :user_limit")
_INSERT_MEMBER = (f"INSERT INTO memberships ({', '.join(_MEMBER_COLUMNS)}) "
                  f"VALUES ({', '.join(':' + c for c in _MEMBER_COLUMNS)}) RETURNING *")
_COUNT_CHANNEL = "UPDATE channels SET members_count = members_count + 1 WHERE sid = :channel_sid"
_SQLITE_JOIN = [DriverSQL.of(_COUNT_USER), DriverSQL.of(_INSERT_MEMBER), DriverSQL.of(_COUNT_CHANNEL)]
# PostgreSQL: the three writes in one statement (one round trip): the member row only when the
# user's count moved (under its limit), the channel's count only when the member row went in.
_PG_JOIN = DriverSQL.of(
    f"WITH counted AS ({_COUNT_USER} RETURNING sid), "
    f"inserted AS (INSERT INTO memberships ({', '.join(_MEMBER_COLUMNS)}) "
    f"SELECT {', '.join(f'CAST(:{c.name} AS {_pg_type(c)})' for c in memberships.c if c.name != 'id')} "
    "FROM counted RETURNING *), "
    f"moved AS ({_COUNT_CHANNEL} AND EXISTS (SELECT 1 FROM inserted)) "
    "SELECT * FROM inserted")


def _split(row: Mapping[str, Any], names: list[str], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A joined row as (the first table's row, the prefixed table's row): `names` are the first
    table's columns, the rest carry `prefix`."""
    values = list(row.values())
    n = len(names)
    other = dict(zip(list(row)[n:], values[n:], strict=True))
    return dict(zip(names, values[:n], strict=True)), {name[len(prefix):]: v for name, v in other.items()}


_CHANNEL_NAMES = [c.name for c in channels.c]
_USER_NAMES = [c.name for c in users.c]


def join_target(conn: Connection, *, account_sid: str, service_sid: str,
                channel_key: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(service, channel) of a member add in one statement, the channel row locked; 404 when
    the account has no such service or the service no such channel (get_service and
    get_channel(lock=True) in one)."""
    if not is_sid("IS", service_sid) or "\x00" in channel_key:
        raise errors.not_found()
    stmt = _TARGET["sid" if is_sid("CH", channel_key) else "unique_name"]
    rows, _ = driver_rows(conn, stmt, {"service_sid": service_sid, "key": channel_key, "account_sid": account_sid},
                          _TARGET_BOOLEANS)
    if not rows:
        raise errors.not_found()
    channel, service = _split(rows[0], _CHANNEL_NAMES, _SVC)
    return service, channel


def joiner(conn: Connection, *, channel: Mapping[str, Any],
           identity: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(the identity's user, its row in the locked channel): each None when there is none."""
    rows, _ = driver_rows(conn, _JOINER, {"channel_sid": channel["sid"], "service_sid": channel["service_sid"],
                                          "identity": identity}, _JOINER_BOOLEANS)
    if not rows:
        return None, None
    user, found = _split(rows[0], _USER_NAMES, _MB)
    return user, (found if found["id"] is not None else None)


_UNREAD = object()


def plan_join(*, service: Mapping[str, Any], channel: Mapping[str, Any], user: Mapping[str, Any],
              found: Mapping[str, Any] | None, role_sid: str | None,
              values: Mapping[str, Any]) -> dict[str, Any]:
    """The rules of a member add, before any write (join's, and the async PostgreSQL path's):
    409 50404 when the user is a member; 400 50403 when the channel is full. The role:
    `role_sid`, else a pending invite's, else the creator role for the channel's creator, else
    the service's default channel role. Returns the member row's values and `user_limit`."""
    if found is not None and found["status"] == JOINED:
        raise errors.already_member()
    limits = json.loads(service["limits"])
    if channel["members_count"] >= int(limits.get("channel_members", 250)):
        raise errors.channel_full()
    if role_sid is None:
        if found is not None:
            role_sid = found["role_sid"]
        elif channel["created_by"] == user["identity"]:
            role_sid = service["default_channel_creator_role_sid"]
        else:
            role_sid = service["default_channel_role_sid"]
    ts = now()
    return {
        "sid": new_sid("MB"), "status": JOINED, "account_sid": channel["account_sid"],
        "service_sid": channel["service_sid"], "channel_sid": channel["sid"], "user_sid": user["sid"],
        "identity": user["identity"], "role_sid": role_sid, "attributes": values.get("attributes"),
        "last_consumed_message_index": values.get("last_consumed_message_index"),
        "last_consumption_timestamp": values.get("last_consumption_timestamp"),
        "notification_level": "default", "created_by": None,
        "date_created": values.get("date_created") or ts,
        "date_updated": values.get("date_updated") or values.get("date_created") or ts,
        "user_limit": int(limits.get("user_channels", 100)),
    }


def join(conn: Connection, *, service: Mapping[str, Any], channel: Mapping[str, Any], user: Mapping[str, Any],
         role_sid: str | None, values: Mapping[str, Any], found: Any = _UNREAD) -> Mapping[str, Any]:
    """Make the user a member of the locked `channel` (plan_join's rules); 400 50208 when the
    user is in as many channels as the service allows. The invite is consumed. `values`:
    attributes, last_consumed_message_index, last_consumption_timestamp, date_created,
    date_updated. `found`: the user's row in the channel when the caller read it after taking
    the lock."""
    if found is _UNREAD:
        found = membership_of(conn, channel_sid=channel["sid"], user_sid=user["sid"])
    params = plan_join(service=service, channel=channel, user=user, found=found, role_sid=role_sid, values=values)
    if found is not None:  # the pending invite, consumed
        conn.execute(memberships.delete().where(memberships.c.id == found["id"]))
    try:
        if conn.dialect.name == "sqlite":
            count_user, insert_member, count_channel = _SQLITE_JOIN
            member = None
            if driver_rows(conn, count_user, params)[1]:
                member = driver_rows(conn, insert_member, {k: params[k] for k in _MEMBER_COLUMNS})[0][0]
                driver_rows(conn, count_channel, params)
        else:
            inserted, _ = driver_rows(conn, _PG_JOIN, params)
            member = inserted[0] if inserted else None
    except IntegrityError as exc:
        if is_unique_violation(exc):  # a lost race the channel lock did not serialize
            raise errors.already_member() from None
        if is_foreign_key_violation(exc):  # the user or channel, deleted by a concurrent request
            raise errors.not_found() from None
        raise
    if member is None:  # the user's count did not move
        if conn.execute(select(users.c.id).where(users.c.sid == user["sid"])).first() is None:
            raise errors.not_found()  # a concurrent request deleted the user
        raise errors.user_channels_exceeded()
    return member


# ---- The same member add on PostgreSQL's async pool (db.AsyncPostgres), on the event loop:
# the same statements in one transaction, without a threadpool hop and SQLAlchemy's sync
# path (which cost more CPU than the five round trips themselves).

_USER_EXISTS_PG = "SELECT 1 FROM users WHERE sid = %(user_sid)s"
_DELETE_INVITE_PG = "DELETE FROM memberships WHERE id = %(id)s"


async def _rows(conn: Any, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a statement that returns rows (psycopg builds cursor.description anew on
    every access: ~25 µs for a joined row's columns, so it is not asked)."""
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def join_target_async(conn: Any, *, account_sid: str, service_sid: str,
                            channel_key: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """join_target on a psycopg AsyncConnection (dict rows) in a transaction."""
    if not is_sid("IS", service_sid) or "\x00" in channel_key:
        raise errors.not_found()
    stmt = _TARGET["sid" if is_sid("CH", channel_key) else "unique_name"]
    rows = await _rows(conn, stmt.postgresql, {"service_sid": service_sid, "key": channel_key,
                                               "account_sid": account_sid})
    if not rows:
        raise errors.not_found()
    channel, service = _split(rows[0], _CHANNEL_NAMES, _SVC)
    return service, channel


async def joiner_async(conn: Any, *, channel: Mapping[str, Any],
                       identity: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    rows = await _rows(conn, _JOINER.postgresql, {"channel_sid": channel["sid"],
                                                  "service_sid": channel["service_sid"], "identity": identity})
    if not rows:
        return None, None
    user, found = _split(rows[0], _USER_NAMES, _MB)
    return user, (found if found["id"] is not None else None)


async def join_async(conn: Any, *, service: Mapping[str, Any], channel: Mapping[str, Any],
                     user: Mapping[str, Any], found: Mapping[str, Any] | None, role_sid: str | None,
                     values: Mapping[str, Any]) -> Mapping[str, Any]:
    """join on a psycopg AsyncConnection in a transaction: the same rules, the same statements."""
    from psycopg.errors import ForeignKeyViolation, UniqueViolation

    params = plan_join(service=service, channel=channel, user=user, found=found, role_sid=role_sid, values=values)
    if found is not None:  # the pending invite, consumed
        await conn.execute(_DELETE_INVITE_PG, {"id": found["id"]})
    try:
        inserted = await _rows(conn, _PG_JOIN.postgresql, params)
    except UniqueViolation:  # a lost race the channel lock did not serialize
        raise errors.already_member() from None
    except ForeignKeyViolation:  # the user or channel, deleted by a concurrent request
        raise errors.not_found() from None
    if not inserted:  # the user's count did not move
        if not await _rows(conn, _USER_EXISTS_PG, {"user_sid": user["sid"]}):
            raise errors.not_found()  # a concurrent request deleted the user
        raise errors.user_channels_exceeded()
    return inserted[0]


def get_member(conn: Connection, *, channel: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A member of the channel by MB SID or identity; 404 when there is none."""
    if "\x00" in key:
        raise errors.not_found()
    column = memberships.c.sid if is_sid("MB", key) else memberships.c.identity
    row = first_row(conn.execute(select(memberships).where(
        memberships.c.channel_sid == channel["sid"], memberships.c.status == JOINED, column == key)))
    if row is None:
        raise errors.not_found()
    return row


def list_rows(conn: Connection, *, channel_sid: str, status: str, identities: Sequence[str],
              req: PageRequest) -> Page:
    """A channel's members or invites in creation order, optionally of these identities only."""
    stmt = select(memberships).where(memberships.c.channel_sid == channel_sid, memberships.c.status == status)
    if identities:
        stmt = stmt.where(memberships.c.identity.in_(list(identities)))
    return fetch_page(conn, stmt, memberships.c.id, req)


def update_row(conn: Connection, *, row: Mapping[str, Any], values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Change a member's or user channel's columns; date_updated is now unless given."""
    changes = dict(values)
    changes.setdefault("date_updated", now())
    try:
        conn.execute(memberships.update().where(memberships.c.id == row["id"]).values(**changes))
    except IntegrityError as exc:
        if is_foreign_key_violation(exc):  # the role was deleted after it was checked
            raise errors.invalid_channel_role() from None
        raise
    found = first_row(conn.execute(select(memberships).where(memberships.c.id == row["id"])))
    if found is None:
        raise errors.not_found()
    return found


def leave(conn: Connection, *, row: Mapping[str, Any]) -> None:
    """Delete a member (counts follow) or an invite. The caller holds the channel's lock."""
    if not conn.execute(memberships.delete().where(memberships.c.id == row["id"])).rowcount:
        raise errors.not_found()  # a concurrent request removed it after we read it
    if row["status"] != JOINED:
        return
    conn.execute(channels.update().where(channels.c.sid == row["channel_sid"])
                 .values(members_count=channels.c.members_count - 1))
    conn.execute(update(users).where(users.c.sid == row["user_sid"])
                 .values(joined_channels_count=users.c.joined_channels_count - 1))


def remove_user(conn: Connection, *, user: Mapping[str, Any]) -> None:
    """Before a user is deleted: its members and invites go, each channel it was in counting one
    member less (channels in SID order)."""
    conn.execute(select(users.c.id).where(users.c.sid == user["sid"]).with_for_update())
    joined = sorted(conn.execute(select(memberships.c.channel_sid).where(
        memberships.c.user_sid == user["sid"], memberships.c.status == JOINED)).scalars())
    for start in range(0, len(joined), 500):
        conn.execute(channels.update().where(channels.c.sid.in_(joined[start:start + 500]))
                     .values(members_count=channels.c.members_count - 1))
    conn.execute(memberships.delete().where(memberships.c.user_sid == user["sid"]))


def list_user_channels(conn: Connection, *, user_sid: str, req: PageRequest) -> Page:
    """The user's joined and invited channels in creation order of the rows."""
    return fetch_page(conn, select(memberships).where(memberships.c.user_sid == user_sid), memberships.c.id, req)


def get_user_channel(conn: Connection, *, user_sid: str, channel_sid: str) -> Mapping[str, Any]:
    row = membership_of(conn, channel_sid=channel_sid, user_sid=user_sid)
    if row is None:
        raise errors.not_found()
    return row


def role_in_use(conn: Connection, *, role_sid: str) -> bool:
    """Whether a member or invite holds the role (roles.delete_role refuses then, 50100)."""
    return conn.execute(select(memberships.c.id).where(memberships.c.role_sid == role_sid).limit(1)).first() is not None
