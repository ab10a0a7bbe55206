"""Users of a service (SPEC §3): unique by identity, created on first encounter."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from psycopg.errors import ForeignKeyViolation
from sqlalchemy import Boolean, Connection, any_, bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError

from . import errors
from .db import Batcher, Database, first_row, is_foreign_key_violation, now, sqlite_connection
from .formats import iso8601
from .models import connections, services, users
from .paging import Page, PageRequest, fetch_page
from .roles import check_role
from .sids import is_sid, new_sid
from .store.channels import forget_creator
from .store.members import remove_user as remove_memberships
from .tombstones import Tombstones
from .tombstones import refused as tombstone_refusal

Unset = object()

# Built once: building a Core statement per call costs ~70 µs, more than the query.
_BY_IDENTITY = select(users).where(users.c.service_sid == bindparam("service_sid"),
                                   users.c.identity == bindparam("identity"))
_BY_SID = select(users).where(users.c.sid == bindparam("sid"), users.c.service_sid == bindparam("service_sid"))


def user_to_json(user: Mapping[str, Any], base_url: str, *, is_online: bool | None = None) -> dict[str, Any]:
    """The chat.v2.service.user resource; is_online is given only where the caller knows it."""
    url = f"{base_url}/v2/Services/{user['service_sid']}/Users/{user['sid']}"
    return {
        "sid": user["sid"],
        "account_sid": user["account_sid"],
        "service_sid": user["service_sid"],
        "role_sid": user["role_sid"],
        "identity": user["identity"],
        "attributes": user["attributes"] if user["attributes"] is not None else "{}",
        "is_online": is_online,
        # No push bindings exist yet, so no user has ever been notifiable: null (SPEC §3).
        "is_notifiable": None,
        "friendly_name": user["friendly_name"],
        "joined_channels_count": user["joined_channels_count"],
        "date_created": iso8601(user["date_created"]),
        "date_updated": iso8601(user["date_updated"]),
        "links": {"user_channels": f"{url}/Channels", "user_bindings": f"{url}/Bindings"},
        "url": url,
    }


def _new_row(service: Mapping[str, Any], identity: str, role_sid: str | None,
             attributes: str | None, friendly_name: str | None) -> dict[str, Any]:
    ts = now()
    return {
        "sid": new_sid("US"), "account_sid": service["account_sid"], "service_sid": service["sid"],
        "role_sid": role_sid or service["default_service_role_sid"], "identity": identity,
        "attributes": attributes, "friendly_name": friendly_name, "joined_channels_count": 0,
        "was_online": False, "date_created": ts, "date_updated": ts,
    }


# A user row whose role, when none is given, is its service's default role as committed when
# the statement runs (read in the statement itself, not from a cache another process may have
# made stale); account and service come from the services row, so a deleted service inserts
# nothing. RETURNING: what was inserted, nothing on a taken identity.
_INSERT_FROM_SERVICE = text(
    "INSERT INTO users (sid, account_sid, service_sid, role_sid, identity, attributes, friendly_name, "
    "joined_channels_count, was_online, date_created, date_updated) "
    "SELECT CAST(:sid AS VARCHAR), s.account_sid, s.sid, COALESCE(CAST(:role_sid AS VARCHAR), "
    "s.default_service_role_sid), CAST(:identity AS VARCHAR), CAST(:attributes AS TEXT), "
    "CAST(:friendly_name AS VARCHAR), 0, false, CAST(:ts AS BIGINT), CAST(:ts AS BIGINT) "
    "FROM services s WHERE s.sid = :service_sid "
    "ON CONFLICT DO NOTHING RETURNING id, account_sid, role_sid")


def is_role_violation(exc: IntegrityError) -> bool:
    """Whether a user insert or update named a role that is gone (users.role_sid's foreign key).
    SQLite does not say which key failed, but a user written from its services row can only
    break that one."""
    if not is_foreign_key_violation(exc):
        return False
    diag = getattr(exc.orig, "diag", None)
    return diag is None or getattr(diag, "constraint_name", None) in (None, "fk_users_role_sid")


def _insert(conn: Connection, row: dict[str, Any], *, role_sid: str | None) -> dict[str, Any] | None:
    """INSERT … SELECT … FROM services … ON CONFLICT DO NOTHING of a user row: the row as
    inserted, or None (identity taken, or the service deleted by a concurrent request). A role
    deleted meanwhile is 50102 when the caller named it; the service's default role switched and
    deleted between the statement's read and its write is a conflict to retry (503 20503)."""
    try:
        inserted = conn.execute(_INSERT_FROM_SERVICE, {
            "sid": row["sid"], "role_sid": role_sid, "identity": row["identity"], "attributes": row["attributes"],
            "friendly_name": row["friendly_name"], "ts": row["date_created"], "service_sid": row["service_sid"],
        }).first()
    except IntegrityError as exc:
        if is_role_violation(exc):
            raise (errors.invalid_role("RoleSid") if role_sid is not None else errors.database_busy()) from None
        if is_foreign_key_violation(exc):  # the service, deleted by a concurrent request
            raise errors.not_found() from None
        raise
    if inserted is None:
        return None
    return dict(row, id=inserted.id, account_sid=inserted.account_sid, role_sid=inserted.role_sid)


def _service_exists(conn: Connection, service_sid: str) -> bool:
    return conn.execute(select(services.c.id).where(services.c.sid == service_sid)).first() is not None


def create_user(conn: Connection, *, service: Mapping[str, Any], identity: str, role_sid: str | None = None,
                attributes: str | None = None, friendly_name: str | None = None) -> dict[str, Any]:
    """A new user; 409 50201 if the identity exists, decided by the unique constraint."""
    if role_sid is not None:
        check_role(conn, service_sid=service["sid"], role_sid=role_sid, type="deployment", param="RoleSid")
    row = _new_row(service, identity, role_sid, attributes, friendly_name)
    made = _insert(conn, row, role_sid=role_sid)
    if made is None:
        if not _service_exists(conn, service["sid"]):
            raise errors.not_found()  # a concurrent request deleted the service
        raise errors.identity_taken()
    return made


# SQLite: the same statement compiled once and run on the DBAPI cursor of the SQLAlchemy
# connection, inside its transaction. The hot read then costs what the driver costs (~8 µs)
# instead of ~30 µs of SQLAlchemy result processing, on the hottest read of token issuance.
_BY_IDENTITY_SQLITE = str(_BY_IDENTITY.compile(dialect=sqlite_dialect.dialect()))
_COLUMNS = tuple(c.name for c in users.c)
_BOOLEANS = tuple(i for i, c in enumerate(users.c) if isinstance(c.type, Boolean))


def find_by_identity(conn: Connection, *, service_sid: str, identity: str) -> Mapping[str, Any] | None:
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
        values[i] = bool(values[i])
    return dict(zip(_COLUMNS, values, strict=True))


def get_or_create_user(conn: Connection, *, service: Mapping[str, Any],
                       identity: str) -> tuple[Mapping[str, Any], bool]:
    """The user of this identity, created with the default role on first encounter.

    One indexed read when it exists. Otherwise INSERT … ON CONFLICT DO NOTHING decides the race
    in the database: the loser reads the winner's row, so every caller gets the same user."""
    found = find_by_identity(conn, service_sid=service["sid"], identity=identity)
    if found is not None:
        return found, False
    made = _insert(conn, _new_row(service, identity, None, None, None), role_sid=None)
    if made is not None:
        return made, True
    winner = find_by_identity(conn, service_sid=service["sid"], identity=identity)
    if winner is None:
        if not _service_exists(conn, service["sid"]):
            raise errors.not_found()  # the service was deleted a moment ago
        raise errors.created_and_deleted()  # created and deleted again between our two statements
    return winner, False


_PG = postgresql_dialect.psycopg.dialect()
_BY_IDENTITIES_PG = str(select(users).where(users.c.service_sid == bindparam("service_sid"),
                                            users.c.identity == any_(bindparam("identities")))
                        .compile(dialect=_PG))
# First encounters of one service in one statement (one commit): only sid and identity vary.
# The role is the service's default as committed when the statement runs, read from the
# services row in the statement itself (the caller's service row may be a stale cache entry).
_INSERT_MANY_PG = (
    "INSERT INTO users (sid, account_sid, service_sid, role_sid, identity, attributes, friendly_name, "
    "joined_channels_count, was_online, date_created, date_updated) "
    "SELECT u.sid, s.account_sid, s.sid, s.default_service_role_sid, u.identity, NULL, NULL, 0, false, "
    "%(ts)s, %(ts)s "
    "FROM services s, unnest(%(sids)s::varchar[], %(identities)s::varchar[]) AS u(sid, identity) "
    "WHERE s.sid = %(service_sid)s "
    "ON CONFLICT DO NOTHING RETURNING id, sid, identity, account_sid, role_sid"
)
_SERVICE_EXISTS_PG = "SELECT 1 AS found FROM services WHERE sid = %(service_sid)s"
_ROLE_RACE_RETRIES = 3


async def _each(*calls: Any) -> list[Any]:
    """Each call's result or exception: concurrently when several (a batch spanning services),
    directly for the usual one (gather would cost a task and a future per batch)."""
    if len(calls) == 1:
        try:
            return [await calls[0]]
        except Exception as exc:
            return [exc]
    return await asyncio.gather(*calls, return_exceptions=True)


async def _by_identities(apg: Any, service_sid: str, identities: list[str]) -> list[dict[str, Any]]:
    return await apg.fetchall(_BY_IDENTITIES_PG, {"service_sid": service_sid, "identities": identities})


async def _read_batch(apg: Any, items: list[tuple[str, str]]) -> list[Any]:
    """Users of (service_sid, identity) pairs, None where there is none: one statement per
    service, the services' statements concurrent; a failed statement fails only its items."""
    wanted: dict[str, set[str]] = {}
    for service_sid, identity in items:
        wanted.setdefault(service_sid, set()).add(identity)

    outcomes = await _each(*(_by_identities(apg, s, sorted(ids)) for s, ids in wanted.items()))
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    failed: dict[str, BaseException] = {}
    for service_sid, outcome in zip(wanted, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed[service_sid] = outcome
            continue
        for row in outcome:
            found[(service_sid, row["identity"])] = row
    return [failed[item[0]] if item[0] in failed else found.get(item) for item in items]


async def _create_service_batch(apg: Any, svc: Mapping[str, Any], identities: list[str]) -> dict[str, Any]:
    """First encounters of one service: one INSERT … ON CONFLICT DO NOTHING (identities sorted,
    so two batches taking the same new identities lock them in the same order and cannot
    deadlock); who lost a race reads the winner. Per identity (user, created) or a TwilioError."""
    ts = now()
    rows = {identity: dict(_new_row(svc, identity, None, None, None), date_created=ts, date_updated=ts)
            for identity in identities}
    for attempt in range(1, _ROLE_RACE_RETRIES + 1):
        try:
            inserted = await apg.fetchall(_INSERT_MANY_PG, {
                "service_sid": svc["sid"], "ts": ts, "sids": [rows[i]["sid"] for i in identities],
                "identities": identities})
            break
        except ForeignKeyViolation:
            # The default role read by the statement was switched and deleted before its write
            # (or the service deleted): the next statement reads the default committed now.
            if attempt == _ROLE_RACE_RETRIES:
                raise errors.database_busy() from None
    outcome: dict[str, Any] = {r["identity"]: (dict(rows[r["identity"]], id=r["id"], account_sid=r["account_sid"],
                                                    role_sid=r["role_sid"]), True) for r in inserted}
    lost = [identity for identity in identities if identity not in outcome]
    if lost:
        for row in await _by_identities(apg, svc["sid"], lost):
            outcome[row["identity"]] = (row, False)
        if any(identity not in outcome for identity in lost) and not await apg.fetchall(
                _SERVICE_EXISTS_PG, {"service_sid": svc["sid"]}):
            return {identity: None for identity in identities}  # the service was deleted a moment ago
    return outcome


async def _create_batch(apg: Any, items: list[tuple[Mapping[str, Any], str]]) -> list[Any]:
    """get-or-create's second half for (service, identity) pairs not found a moment ago, a
    statement per service (concurrently). Per item (user, created), or the error to raise for
    it; of several callers for one identity, one is its creator."""
    services: dict[str, tuple[Mapping[str, Any], set[str]]] = {}
    for svc, identity in items:
        services.setdefault(svc["sid"], (svc, set()))[1].add(identity)
    outcomes = await _each(*(_create_service_batch(apg, svc, sorted(identities))
                             for svc, identities in services.values()))
    by_service = dict(zip(services, outcomes, strict=True))
    results: list[Any] = []
    for svc, identity in items:
        outcome = by_service[svc["sid"]]
        if isinstance(outcome, BaseException):
            results.append(outcome)
            continue
        if identity not in outcome:  # created and deleted again between our statements
            results.append(errors.created_and_deleted())
            continue
        result = outcome[identity]
        if result is None:
            results.append(errors.not_found())
            continue
        if result[1]:
            outcome[identity] = (result[0], False)  # one creator; the others found it
        results.append(result)
    return results


def _batchers(apg: Any) -> tuple[Batcher[tuple[str, str], Mapping[str, Any] | None],
                                 Batcher[tuple[Mapping[str, Any], str], tuple[Mapping[str, Any], bool]]]:
    found = apg.batchers.get("users.read")
    if found is None:
        found = apg.batchers["users.read"] = Batcher(lambda items: _read_batch(apg, items))
        apg.batchers["users.create"] = Batcher(lambda items: _create_batch(apg, items))
    return found, apg.batchers["users.create"]


async def _ensure_user_pg(db: Database, service: Mapping[str, Any], identity: str) -> tuple[Mapping[str, Any], bool]:
    """get_or_create_user on the async connections, batched with concurrent callers (Batcher):
    a read; on a miss INSERT … ON CONFLICT DO NOTHING (the unique constraint decides the race),
    the loser reading the winner."""
    assert db.apg is not None
    read, create = _batchers(db.apg)
    found = await read((service["sid"], identity))
    if found is not None:
        return found, False
    return await create((service, identity))


async def ensure_user(db: Database, *, service: Mapping[str, Any], identity: str) -> tuple[Mapping[str, Any], bool]:
    """get_or_create_user for request handlers. SQLite: the read inline, a first encounter's
    insert group-committed with concurrent ones (Database.write). PostgreSQL: each statement on
    an async autocommit connection, no threadpool hop."""
    if db.apg is not None:
        return await _ensure_user_pg(db, service, identity)
    found = await db.read(lambda conn: find_by_identity(conn, service_sid=service["sid"], identity=identity))
    if found is not None:
        return found, False
    return await db.write(lambda conn: get_or_create_user(conn, service=service, identity=identity))


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


def list_users(conn: Connection, *, service_sid: str, req: PageRequest) -> Page:
    return fetch_page(conn, select(users).where(users.c.service_sid == service_sid), users.c.id, req)


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


# ---- a deleted user stays deleted (SPEC §11; tombstones.py) ---------------------------------


def get_or_create_unburied(conn: Connection, *, service: Mapping[str, Any], identity: str, issued_at: int,
                           graves: Tombstones) -> tuple[Mapping[str, Any], bool]:
    """get_or_create_user for a presented token: 401 20101 when the identity was deleted at or
    after the token's issue time. Asked in the writing transaction, so no deletion slips between."""
    if graves.refuses(conn, service_sid=service["sid"], identity=identity, issued_at=issued_at):
        raise tombstone_refusal()
    return get_or_create_user(conn, service=service, identity=identity)


async def ensure_token_user(db: Database, *, service: Mapping[str, Any], identity: str, issued_at: int,
                            graves: Tombstones) -> tuple[Mapping[str, Any], bool]:
    """ensure_user for the holder of a token issued at `issued_at`. A user created no later than
    that costs exactly what ensure_user costs; only a missing user or one created after the token
    asks the tombstones whether the token predates a deletion (401 20101)."""
    sid = service["sid"]
    if db.apg is not None:
        read, create = _batchers(db.apg)
        found = await read((sid, identity))
    else:
        found = await db.read(lambda conn: find_by_identity(conn, service_sid=sid, identity=identity))
    if found is not None and not graves.must_ask(found, issued_at):  # must_ask is True for None
        return found, False
    if found is not None:
        if await graves.refuses_user(db, user=found, identity=identity, issued_at=issued_at):
            raise tombstone_refusal()
        return found, False
    if db.apg is None:
        return await db.write(lambda conn: get_or_create_unburied(conn, service=service, identity=identity,
                                                                  issued_at=issued_at, graves=graves))
    if graves.refuses_since(await graves.deleted_at(db, service_sid=sid, identity=identity), issued_at):
        raise tombstone_refusal()
    return await create((service, identity))
