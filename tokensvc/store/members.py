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
# PostgreSQL: the writes of any number of planned joins (plan_join's rows, one array a column)
# in one statement, one round trip: a user's count moves by its joins only while it stays within
# its limit (the guard of _COUNT_USER), its member rows go in only when it moved, each channel's
# count by the rows that went in. The sync path runs it with one join, the batched async path
# (store/member_batch.py) with a batch's.
_JOIN_COLUMNS = [*_MEMBER_COLUMNS, "user_limit"]
_JOIN_TYPES = {**{c.name: _pg_type(c) for c in memberships.c if c.name != "id"}, "user_limit": "BIGINT"}
PG_JOIN = DriverSQL.of(
    "WITH item AS (SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {_JOIN_TYPES[c]}[])" for c in _JOIN_COLUMNS)
    + f") WITH ORDINALITY AS item({', '.join(_JOIN_COLUMNS)}, ord)), "
    "wanted AS (SELECT user_sid, count(*) AS n, min(user_limit) AS user_limit FROM item GROUP BY user_sid), "
    "counted AS (UPDATE users SET joined_channels_count = users.joined_channels_count + wanted.n FROM wanted "
    "WHERE users.sid = wanted.user_sid AND users.joined_channels_count + wanted.n <= wanted.user_limit "
    "RETURNING users.sid), "
    f"inserted AS (INSERT INTO memberships ({', '.join(_MEMBER_COLUMNS)}) "
    f"SELECT {', '.join('item.' + c for c in _MEMBER_COLUMNS)} FROM item JOIN counted ON counted.sid = item.user_sid "
    "ORDER BY item.ord RETURNING *), "
    "moved AS (UPDATE channels SET members_count = channels.members_count + added.n "
    "FROM (SELECT channel_sid, count(*) AS n FROM inserted GROUP BY channel_sid) AS added "
    "WHERE channels.sid = added.channel_sid) "
    "SELECT * FROM inserted")


def join_arrays(plans: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """PG_JOIN's parameters for plan_join's rows: a column's values as one array."""
    return {c: [plan[c] for plan in plans] for c in _JOIN_COLUMNS}


def _split(row: Mapping[str, Any], names: list[str], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A joined row as (the first table's row, the prefixed table's row): `names` are the first
    table's columns, the rest carry `prefix`."""
    values = list(row.values())
    n = len(names)
    other = dict(zip(list(row)[n:], values[n:], strict=True))
    return dict(zip(names, values[:n], strict=True)), {name[len(prefix):]: v for name, v in other.items()}


_CHANNEL_NAMES = [c.name for c in channels.c]
_USER_NAMES = [c.name for c in users.c]


# The batched member add's reads (store/member_batch.py), each after the one before (READ
# COMMITTED: each statement sees what committed before it began): a batch's channels locked in
# SID order (batches sharing channels lock them in one order), then the identities' users,
# locked in SID order, with their rows in those channels. The rows to lock are found first, as
# ids (an uncommitted ARRAY(…) subquery: computed once, by unique-index probes whatever the
# table statistics say), and the locking scan matches them by id alone: a row updated by the
# transaction the lock waited for is rechecked against its own columns (EvalPlanQual), where a
# join to unnest() dropped it.
PG_TARGETS = (
    f"SELECT {_columns(channels)}, {_columns(services, _SVC)} FROM channels "
    "JOIN services ON services.sid = channels.service_sid "
    "WHERE channels.id = ANY(ARRAY(SELECT c.id FROM channels AS c WHERE c.sid = ANY(CAST(%(sids)s AS TEXT[])) "
    "UNION ALL SELECT c.id FROM unnest(CAST(%(name_services)s AS TEXT[]), CAST(%(names)s AS TEXT[])) "
    "AS k(service_sid, name) JOIN channels AS c ON c.service_sid = k.service_sid AND c.unique_name = k.name)) "
    "ORDER BY channels.sid FOR UPDATE OF channels")
PG_JOINERS = (
    f"SELECT {_columns(users)}, mb.* FROM users "
    f"LEFT JOIN LATERAL (SELECT {_columns(memberships, _MB)} FROM memberships "
    "WHERE memberships.user_sid = users.sid AND memberships.channel_sid = ANY(CAST(%(channel_sids)s AS TEXT[]))) "
    "AS mb ON true "
    "WHERE users.id = ANY(ARRAY(SELECT u.id FROM unnest(CAST(%(service_sids)s AS TEXT[]), "
    "CAST(%(identities)s AS TEXT[])) AS k(service_sid, identity) "
    "JOIN users AS u ON u.service_sid = k.service_sid AND u.identity = k.identity)) "
    "ORDER BY users.sid FOR UPDATE OF users")
PG_USER_EXISTS = "SELECT 1 FROM users WHERE sid = %(user_sid)s"
PG_DELETE_INVITES = "DELETE FROM memberships WHERE id = ANY(CAST(%(ids)s AS BIGINT[])) AND status = 'invited'"


def split_target(row: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PG_TARGETS (or join_target) row as (service, channel)."""
    channel, service = _split(row, _CHANNEL_NAMES, _SVC)
    return service, channel


def split_joiner(row: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A PG_JOINERS (or joiner) row as (user, its row in the channel or None)."""
    user, found = _split(row, _USER_NAMES, _MB)
    return user, (found if found["id"] is not None else None)


def not_moved(*, user_exists: bool) -> errors.TwilioError:
    """A planned join whose user count did not move (its guarded UPDATE refused): the user was
    deleted by a concurrent request (404), or reached its limit meanwhile (50208)."""
    return errors.user_channels_exceeded() if user_exists else errors.not_found()


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
    return split_target(rows[0])


def joiner(conn: Connection, *, channel: Mapping[str, Any],
           identity: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(the identity's user, its row in the locked channel): each None when there is none."""
    rows, _ = driver_rows(conn, _JOINER, {"channel_sid": channel["sid"], "service_sid": channel["service_sid"],
                                          "identity": identity}, _JOINER_BOOLEANS)
    if not rows:
        return None, None
    return split_joiner(rows[0])


_UNREAD = object()


def plan_join(*, service: Mapping[str, Any], channel: Mapping[str, Any], user: Mapping[str, Any],
              found: Mapping[str, Any] | None, role_sid: str | None,
              values: Mapping[str, Any]) -> dict[str, Any]:
    """The rules of a member add, before any write (join's, and the batched PostgreSQL path's,
    store/member_batch.py): 409 50404 when the user is a member; 400 50403 when the channel is
    full; 400 50208 when the user is in as many channels as the service allows (as read: the
    count's guarded UPDATE decides a race). The role: `role_sid`, else a pending invite's, else
    the creator role for the channel's creator, else the service's default channel role.
    Returns the member row's values and `user_limit`."""
    if found is not None and found["status"] == JOINED:
        raise errors.already_member()
    limits = json.loads(service["limits"])
    if channel["members_count"] >= int(limits.get("channel_members", 250)):
        raise errors.channel_full()
    user_limit = int(limits.get("user_channels", 100))
    if user["joined_channels_count"] >= user_limit:
        raise errors.user_channels_exceeded()
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
        "user_limit": user_limit,
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
            inserted, _ = driver_rows(conn, PG_JOIN, join_arrays([params]))
            member = inserted[0] if inserted else None
    except IntegrityError as exc:
        if is_unique_violation(exc):  # a lost race the channel lock did not serialize
            raise errors.already_member() from None
        if is_foreign_key_violation(exc):  # the user or channel, deleted by a concurrent request
            raise errors.not_found() from None
        raise
    if member is None:  # the user's count did not move
        raise not_moved(user_exists=conn.execute(select(users.c.id).where(users.c.sid == user["sid"])).first()
                        is not None)
    return member


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
