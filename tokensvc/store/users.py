"""Users of a service (SPEC §3): unique by identity, created on first encounter.

The one get-or-create of a user, as functions of a connection inside any write transaction
(SQLite's group commit, a PostgreSQL transaction, next a Member's creation):

- `get_many(conn, service_sid, identities)`: the users of those identities that exist;
- `insert_many(conn, service, identities)`: INSERT … SELECT … FROM services … ON CONFLICT DO
  NOTHING, the rows actually inserted (an identity taken meanwhile is absent);
- `get_or_create(conn, service, identity)`: (user, created), races settled by the unique
  constraint, the loser reading the winner.

The INSERT is built from the table objects: the statement names only the columns that come from
the services row (account, service, default role) or from the caller (sid, identity, times,
and an admin's role, attributes and friendly name); every other column takes its default from
tables.py, so a new user column is one edit there. store/provision.py runs the same statements
batched on PostgreSQL's async pool for the token hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Boolean, Connection, String, Text, any_, bindparam, delete, func, select, true
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError

from .. import errors
from ..db import DriverSQL, driver_insert, driver_rows, first_row, is_foreign_key_violation, named_rows, now
from ..db.engine import sqlite_connection
from ..sids import is_sid, new_sid
from . import outbox
from .channels import forget_creator
from .members import remove_user as remove_memberships
from .outbox import API, Origin
from .roles import check_role
from .tables import connections, services, users
from .tombstones import Tombstones
from .user_filters import NO_FILTERS as NO_FILTERS  # the list's interface lives here too: store.users.list_users
from .user_filters import UserFilters as UserFilters
from .user_filters import list_users as list_users
from .user_filters import page_key as page_key

Unset = object()
User = Mapping[str, Any]
# What get-or-create gives each identity: (user, created), or the TwilioError that refused it.
Outcome = tuple[User, bool] | errors.TwilioError

# Built once: building a Core statement per call costs ~70 µs, more than the query.
_BY_IDENTITY = select(users).where(users.c.service_sid == bindparam("service_sid"),
                                   users.c.identity == bindparam("identity"))
BY_IDENTITIES = select(users).where(users.c.service_sid == bindparam("service_sid"),
                                     users.c.identity == any_(bindparam("identities")))
_BY_IDENTITIES_IN = select(users).where(users.c.service_sid == bindparam("service_sid"),
                                        users.c.identity.in_(bindparam("identities", expanding=True)))
_BY_SID = select(users).where(users.c.sid == bindparam("sid"), users.c.service_sid == bindparam("service_sid"))
SERVICE_EXISTS = select(services.c.id).where(services.c.sid == bindparam("service_sid"))
_CHUNK = 500  # identities per IN (...) list on SQLite (its bound-parameter limit)


def _insert_from_services(insert: Any, values: Mapping[str, Any], source: Any = None) -> Any:
    """INSERT INTO users (…) SELECT … FROM [source JOIN] services WHERE services.sid = :service_sid
    ON CONFLICT DO NOTHING RETURNING the whole row. Account and service come from the services
    row, so a deleted service inserts nothing; `values` gives the rest that is not a column
    default (include_defaults renders those)."""
    columns = {"account_sid": services.c.account_sid, "service_sid": services.c.sid, **values}
    rows = services if source is None else source.join(services, true())  # one services row: no product
    query = select(*columns.values()).select_from(rows).where(
        services.c.sid == bindparam("service_sid", type_=String))
    return (insert(users).from_select(list(columns), query, include_defaults=True)
            .on_conflict_do_nothing().returning(*users.c))


_TS = bindparam("ts", type_=BigInteger)
# One user; its role, when none is given, is its service's default role as committed when the
# statement runs (read in the statement itself, not from a cache another process may have made stale).
_ONE = {
    "sid": bindparam("sid", type_=String), "identity": bindparam("identity", type_=String),
    "role_sid": func.coalesce(bindparam("role_sid", type_=String), services.c.default_service_role_sid),
    "attributes": bindparam("attributes", type_=Text), "friendly_name": bindparam("friendly_name", type_=String),
    "date_created": _TS, "date_updated": _TS,
}
_INSERT_ONE = {"sqlite": _insert_from_services(sqlite_dialect.insert, _ONE),
               "postgresql": _insert_from_services(postgresql_dialect.insert, _ONE)}
# PostgreSQL: first encounters of one service in one statement (one commit), with the default
# role; only sid and identity vary, zipped from two arrays.
_NEW = func.unnest(bindparam("sids", type_=postgresql_dialect.ARRAY(String)),
                   bindparam("identities", type_=postgresql_dialect.ARRAY(String))
                   ).table_valued("sid", "identity").render_derived(name="u")
INSERT_MANY_PG = _insert_from_services(postgresql_dialect.insert, {
    "sid": _NEW.c.sid, "identity": _NEW.c.identity, "role_sid": services.c.default_service_role_sid,
    "date_created": _TS, "date_updated": _TS}, _NEW)


def is_role_violation(exc: IntegrityError) -> bool:
    """Whether a user insert or update named a role that is gone (users.role_sid's foreign key).
    SQLite does not say which key failed, but a user written from its services row can only
    break that one."""
    if not is_foreign_key_violation(exc):
        return False
    diag = getattr(exc.orig, "diag", None)
    return diag is None or getattr(diag, "constraint_name", None) in (None, "fk_users_role_sid")


def _refusal(exc: IntegrityError, *, role_sid: str | None) -> Exception:
    """A user insert the database refused: a role deleted meanwhile is 50102 when the caller named
    it; the service's default role switched and deleted between the statement's read and its write
    is a conflict to retry (503 20503); the service deleted by a concurrent request is 404."""
    if is_role_violation(exc):
        return errors.invalid_role("RoleSid") if role_sid is not None else errors.database_busy()
    if is_foreign_key_violation(exc):
        return errors.not_found()
    return exc


# On the driver's cursor (db.driver_rows): SQLAlchemy's execution of this statement cost more
# than the insert itself (~45 µs of ~90), on every first encounter and every imported line.
_INSERT_ONE_DRIVER, _INSERT_ONE_DEFAULTS = driver_insert(_INSERT_ONE, users)
_BOOLEAN_NAMES = frozenset(c.name for c in users.c if isinstance(c.type, Boolean))


def _insert_one(conn: Connection, service: Mapping[str, Any], identity: str, *, role_sid: str | None = None,
                attributes: str | None = None, friendly_name: str | None = None,
                ts: int | None = None) -> dict[str, Any] | None:
    """One user row as inserted, or None (identity taken, or the service deleted meanwhile)."""
    try:
        rows, _ = driver_rows(conn, _INSERT_ONE_DRIVER, {
            **_INSERT_ONE_DEFAULTS, "sid": new_sid("US"), "identity": identity, "role_sid": role_sid,
            "attributes": attributes, "friendly_name": friendly_name, "ts": now() if ts is None else ts,
            "service_sid": service["sid"]}, _BOOLEAN_NAMES)
    except IntegrityError as exc:
        raise _refusal(exc, role_sid=role_sid) from None
    return rows[0] if rows else None


def service_exists(conn: Connection, service_sid: str) -> bool:
    return conn.execute(SERVICE_EXISTS, {"service_sid": service_sid}).first() is not None


# SQLite: the same statement compiled once and run on the DBAPI cursor of the SQLAlchemy
# connection, inside its transaction. The hot read then costs what the driver costs (~8 µs)
# instead of ~30 µs of SQLAlchemy result processing, on the hottest read of token issuance.
_BY_IDENTITY_SQLITE = str(_BY_IDENTITY.compile(dialect=sqlite_dialect.dialect()))
_COLUMNS = tuple(c.name for c in users.c)
_BOOLEANS = tuple(i for i, c in enumerate(users.c) if isinstance(c.type, Boolean))


def find_by_identity(conn: Connection, *, service_sid: str, identity: str) -> User | None:
    """The user of an identity (one indexed read), or None."""
    if conn.dialect.name != "sqlite":
        return first_row(conn.execute(_BY_IDENTITY, {"service_sid": service_sid, "identity": identity}))
    cur = sqlite_connection(conn).cursor()
    try:
        row = cur.execute(_BY_IDENTITY_SQLITE, (service_sid, identity)).fetchone()
    finally:
        cur.close()
    if row is None:
        return None
    values = list(row)
    for i in _BOOLEANS:
        values[i] = None if values[i] is None else bool(values[i])  # users.notifiable is nullable
    return dict(zip(_COLUMNS, values, strict=True))


def get_many(conn: Connection, service_sid: str, identities: Iterable[str]) -> dict[str, User]:
    """The existing users of those identities, by identity (PostgreSQL: one `= ANY(…)` read;
    SQLite: one IN read per 500)."""
    wanted = sorted(set(identities))
    if conn.dialect.name == "postgresql":
        return {row["identity"]: row for row in named_rows(conn.execute(
            BY_IDENTITIES, {"service_sid": service_sid, "identities": wanted}))}
    found: dict[str, User] = {}
    for i in range(0, len(wanted), _CHUNK):
        for row in named_rows(conn.execute(_BY_IDENTITIES_IN, {"service_sid": service_sid,
                                                               "identities": wanted[i:i + _CHUNK]})):
            found[row["identity"]] = row
    return found


def insert_many(conn: Connection, service: Mapping[str, Any], identities: Iterable[str]) -> dict[str, User]:
    """Insert users of those identities with the service's default role; the rows inserted, by
    identity (one taken meanwhile is absent). Sorted, so two transactions taking the same new
    identities lock them in the same order and cannot deadlock."""
    wanted, ts = sorted(set(identities)), now()
    if not wanted:
        return {}
    if conn.dialect.name != "postgresql":
        made = (_insert_one(conn, service, identity, ts=ts) for identity in wanted)
        return {row["identity"]: row for row in made if row is not None}
    try:
        rows = named_rows(conn.execute(INSERT_MANY_PG, {
            "service_sid": service["sid"], "ts": ts, "sids": [new_sid("US") for _ in wanted], "identities": wanted}))
        return {row["identity"]: dict(row) for row in rows}
    except IntegrityError as exc:
        raise _refusal(exc, role_sid=None) from None


def settle(identities: Sequence[str], made: Mapping[str, User], winners: Mapping[str, User], *,
           service_exists: bool) -> dict[str, Outcome]:
    """The outcome of first encounters, whichever database ran them: created (`made`), found
    created by a concurrent caller (`winners`, read after the insert lost), or refused: the
    service was deleted a moment ago (404), or the identity was created and deleted again
    between our two statements (409 50201)."""
    if not service_exists:
        return {identity: errors.not_found() for identity in identities}
    return {identity: (made[identity], True) if identity in made else
            (winners[identity], False) if identity in winners else errors.created_and_deleted()
            for identity in identities}


def _first_encounters(conn: Connection, service: Mapping[str, Any], identities: Sequence[str],
                      origin: Origin | Mapping[str, Origin] = API) -> dict[str, Outcome]:
    made = insert_many(conn, service, identities)
    if made:  # onUserAdded for every provisioning path, in the insert's transaction (SPEC §10)
        if isinstance(origin, Origin):
            outbox.record(conn, service, "onUserAdded", made.values(), origin)
        else:
            for identity, row in made.items():
                outbox.record(conn, service, "onUserAdded", [row], origin.get(identity, API))
    lost = [identity for identity in identities if identity not in made]
    winners = get_many(conn, service["sid"], lost) if lost else {}
    exists = all(identity in winners for identity in lost) or service_exists(conn, service["sid"])
    return settle(identities, made, winners, service_exists=exists)


def get_or_create(conn: Connection, service: Mapping[str, Any], identity: str,
                  origin: Origin = API, fields: Mapping[str, Any] | None = None) -> tuple[User, bool]:
    """The user of this identity, created with the service's default role on first encounter;
    usable inside any write transaction. One indexed read when it exists; otherwise INSERT … ON
    CONFLICT DO NOTHING decides the race in the database, the loser reading the winner's row."""
    found = find_by_identity(conn, service_sid=service["sid"], identity=identity)
    if found is not None:
        return found, False
    return first_encounter(conn, service, identity, origin, fields)


def first_encounter(conn: Connection, service: Mapping[str, Any], identity: str, origin: Origin = API,
                    fields: Mapping[str, Any] | None = None) -> tuple[User, bool]:
    """get_or_create's second half, for an identity this transaction just read and did not find
    (a member add reads it with the channel's row): the insert, and the race rule."""
    if fields:  # what a pre-event hook set (webhooks/pre.py)
        return _create_with(conn, service, identity, origin, fields)
    outcome = _first_encounters(conn, service, [identity], origin)[identity]
    if isinstance(outcome, errors.TwilioError):
        raise outcome
    return outcome


def _create_with(conn: Connection, service: Mapping[str, Any], identity: str, origin: Origin,
                 fields: Mapping[str, Any]) -> tuple[User, bool]:
    """A first encounter with the fields an onUserAdd hook set; a lost race reads the winner."""
    role_sid = fields.get("role_sid")
    if role_sid is not None:
        check_role(conn, service_sid=service["sid"], role_sid=role_sid, type="deployment", param="RoleSid")
    made = _insert_one(conn, service, identity, role_sid=role_sid, attributes=fields.get("attributes"),
                       friendly_name=fields.get("friendly_name"))
    if made is not None:
        outbox.record(conn, service, "onUserAdded", [made], origin)
        return made, True
    winner = find_by_identity(conn, service_sid=service["sid"], identity=identity)
    if winner is not None:
        return winner, False
    raise errors.not_found() if not service_exists(conn, service["sid"]) else errors.created_and_deleted()


def get_or_create_many(conn: Connection, service: Mapping[str, Any], identities: Iterable[str],
                       origin: Origin | Mapping[str, Origin] = API) -> dict[str, Outcome]:
    """get_or_create for several identities of one service: one read, then one insert of the
    missing ones (PostgreSQL: one statement). Per identity (user, created) or its refusal."""
    wanted = sorted(set(identities))
    found = get_many(conn, service["sid"], wanted)
    missing = [identity for identity in wanted if identity not in found]
    outcomes: dict[str, Outcome] = {identity: (row, False) for identity, row in found.items()}
    if missing:
        outcomes.update(_first_encounters(conn, service, missing, origin))
    return outcomes


def create_user(conn: Connection, *, service: Mapping[str, Any], identity: str, role_sid: str | None = None,
                attributes: str | None = None, friendly_name: str | None = None, origin: Origin = API) -> User:
    """A new user; 409 50201 if the identity exists, decided by the unique constraint."""
    if role_sid is not None:
        check_role(conn, service_sid=service["sid"], role_sid=role_sid, type="deployment", param="RoleSid")
    made = _insert_one(conn, service, identity, role_sid=role_sid, attributes=attributes, friendly_name=friendly_name)
    if made is None:
        if not service_exists(conn, service["sid"]):
            raise errors.not_found()  # a concurrent request deleted the service
        raise errors.identity_taken()
    outbox.record(conn, service, "onUserAdded", [made], origin)
    return made


# create_many's statement: every column but id (the values create_user's insert gets: the
# services row's, the caller's, and tables.py's scalar defaults), VALUES for n rows.
_MANY_COLUMNS = tuple(c.name for c in users.c if c.name != "id")
_MANY_DEFAULTS = {name: _INSERT_ONE_DEFAULTS.get(name) for name in _MANY_COLUMNS}
_SERVICE_ROW = DriverSQL.of("SELECT account_sid, default_service_role_sid FROM services WHERE sid = :sid")


# Rows per statement: 12 parameters each stay under 999, the bound-parameter limit of SQLite
# before 3.32 (and cheap either way: a statement per 64 rows).
_MANY_ROWS = 64


@lru_cache(maxsize=_MANY_ROWS)
def _insert_rows(n: int) -> DriverSQL:
    def sql(mark: str) -> str:
        row = "(" + ", ".join([mark] * len(_MANY_COLUMNS)) + ")"
        return f"INSERT INTO users ({', '.join(_MANY_COLUMNS)}) VALUES {', '.join([row] * n)} RETURNING id, sid"
    return DriverSQL(sql("?"), sql("%s"))


def create_many(conn: Connection, *, service: Mapping[str, Any], new: Sequence[tuple[str, Mapping[str, Any]]],
                origin: Origin = API) -> list[User]:
    """create_user for several new identities (identity, {role_sid, attributes, friendly_name}
    given or not) in one INSERT and one outbox.record, the rows in the order given: the same
    columns and defaults as create_user's (the role, when none is given, the service's default
    as this transaction reads it). All or nothing: a deleted service (404), a role that is not
    the service's (50102), an identity taken (409 50201) refuses the lot, so run it in a
    savepoint and let create_user decide each line then."""
    if not new:
        return []
    svc_rows, _ = driver_rows(conn, _SERVICE_ROW, {"sid": service["sid"]})
    if not svc_rows:
        raise errors.not_found()  # the service was deleted meanwhile
    for role_sid in {fields["role_sid"] for _, fields in new if fields.get("role_sid") is not None}:
        check_role(conn, service_sid=service["sid"], role_sid=role_sid, type="deployment", param="RoleSid")
    base = {**_MANY_DEFAULTS, "account_sid": svc_rows[0]["account_sid"], "service_sid": service["sid"]}
    ts, default_role = now(), svc_rows[0]["default_service_role_sid"]
    made = [{**base, **fields, "sid": new_sid("US"), "identity": identity, "date_created": ts, "date_updated": ts}
            for identity, fields in new]
    for row in made:
        if row["role_sid"] is None:
            row["role_sid"] = default_role
    ids: list[dict[str, Any]] = []
    try:  # in the order given: ids in file order, as one create_user per line gives them
        for at in range(0, len(made), _MANY_ROWS):
            part = made[at:at + _MANY_ROWS]
            ids += driver_rows(conn, _insert_rows(len(part)), [row[name] for row in part for name in _MANY_COLUMNS])[0]
    except IntegrityError as exc:
        refusal = _refusal(exc, role_sid=next((f["role_sid"] for _, f in new if f.get("role_sid")), None))
        raise errors.identity_taken() if refusal is exc else refusal from None
    sids = {row["sid"]: row["id"] for row in ids}
    rows: list[User] = [{name: sids[row["sid"]] if name == "id" else row[name] for name in _COLUMNS} for row in made]
    outbox.record(conn, service, "onUserAdded", rows, origin)
    return rows


def get_user(conn: Connection, *, service_sid: str, key: str) -> Mapping[str, Any]:
    """A user by `US…` SID or by identity; 404 when there is none."""
    if "\x00" in key:  # no identity holds a NUL, and PostgreSQL refuses one in a query
        raise errors.not_found()
    if is_sid("US", key):
        row = first_row(conn.execute(_BY_SID, {"sid": key, "service_sid": service_sid}))
    else:
        row = find_by_identity(conn, service_sid=service_sid, identity=key)
    if row is None:
        raise errors.not_found()
    return row


def update_user(conn: Connection, *, service_sid: str, key: str, role_sid: Any = Unset,
                attributes: Any = Unset, friendly_name: Any = Unset) -> Mapping[str, Any]:
    """Change role, attributes or friendly name; the identity never changes. Nothing given: no-op."""
    user = get_user(conn, service_sid=service_sid, key=key)
    values: dict[str, Any] = {}
    if role_sid is not Unset:
        values["role_sid"] = check_role(conn, service_sid=service_sid, role_sid=role_sid,
                                        type="deployment", param="RoleSid")
    if attributes is not Unset:
        values["attributes"] = attributes
    if friendly_name is not Unset:
        values["friendly_name"] = friendly_name
    if not values:
        return user
    values["date_updated"] = now()
    try:
        conn.execute(users.update().where(users.c.sid == user["sid"]).values(**values))
    except IntegrityError as exc:
        if is_role_violation(exc):  # the role was deleted after check_role saw it
            raise errors.invalid_role("RoleSid") from None
        raise
    return get_user(conn, service_sid=service_sid, key=user["sid"])


def delete_user(conn: Connection, *, service_sid: str, key: str, graves: Tombstones) -> str:
    """Delete the user row (its connections cascade), leaving a tombstone of its identity in the
    same transaction (a token issued before now cannot re-create it); returns its SID."""
    user = get_user(conn, service_sid=service_sid, key=key)
    # SPEC §8: its members and invites go (every count fixed), its identity leaves created_by.
    remove_memberships(conn, user=user)
    forget_creator(conn, service_sid=service_sid, identity=user["identity"])
    if not conn.execute(delete(users).where(users.c.sid == user["sid"])).rowcount:
        raise errors.not_found()  # a concurrent request deleted it after we read it
    graves.bury(conn, service_sid=service_sid, identity=user["identity"], at=now())
    return user["sid"]


def is_online(conn: Connection, *, user: Mapping[str, Any], timeout: int) -> bool | None:
    """Presence (SPEC §3/§5): null before the first connection, then whether a connection on any
    process has a heartbeat younger than `timeout` seconds."""
    if not user["was_online"]:
        return None
    live = conn.execute(select(func.count()).select_from(connections).where(
        connections.c.user_sid == user["sid"], connections.c.heartbeat_at > now() - timeout)).scalar()
    return bool(live)
