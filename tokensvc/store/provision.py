"""Provisioning users for request handlers: the token endpoint (`ensure_user`) and a presented
token (`ensure_token_user`, which asks the tombstones). SQLite: the read inline, a first
encounter's insert group-committed (`Database.write`) through store/users.get_or_create.
PostgreSQL: the same statements (store/users.py builds them) on the async pool, batched with
concurrent callers (db.Batcher): a read per service, then on a miss one INSERT … ON CONFLICT DO
NOTHING per service, the losers reading the winners (store/users.settle decides the outcome)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from psycopg.errors import ForeignKeyViolation
from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Text,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
)
from sqlalchemy.dialects import postgresql as postgresql_dialect

from .. import errors
from ..db import Batcher, Database, now
from ..sids import new_sid
from . import outbox
from .outbox import PENDING
from .outbox_tables import outbox as outbox_table
from .tables import users
from .tombstones import Tombstones
from .tombstones import refused as tombstone_refusal
from .users import BY_IDENTITIES, INSERT_MANY_PG, SERVICE_EXISTS, Outcome, User, find_by_identity, get_or_create
from .users import settle as settle_outcomes

_PG = postgresql_dialect.psycopg.dialect()


def _pg(stmt: Any) -> tuple[str, dict[str, Any]]:
    """A statement as psycopg's SQL text, and the values of the column defaults it binds (what
    SQLAlchemy's execution would fill in)."""
    compiled = stmt.compile(dialect=_PG)
    defaults: dict[str, Any] = {}
    for key in compiled.params:
        default = users.c[key].default if key in users.c else None
        if default is not None:
            assert default.is_scalar, f"users.{key}: the async path renders scalar column defaults only"
            defaults[key] = default.arg
    return str(compiled), defaults


def _with_user_added(insert: Any) -> Any:
    """The batched first-encounter insert and its onUserAdded outbox rows in one statement (a
    data-modifying CTE): the hot path keeps one round trip, and the rows commit with the users.
    `wh_sdk` lists the identities provisioned by a presented token (Source SDK)."""
    made = insert.cte("made")
    sdk = made.c.identity == any_(bindparam("wh_sdk", type_=postgresql_dialect.ARRAY(String)))
    rows = select(
        func.md5(func.concat(made.c.sid, func.random(), func.clock_timestamp())), made.c.account_sid,
        made.c.service_sid, made.c.sid, literal_column("'onUserAdded'"), bindparam("wh_url", type_=Text),
        bindparam("wh_method", type_=String), bindparam("wh_retries", type_=Integer),
        case((sdk, literal_column("'SDK'")), else_=literal_column("'API'")), case((sdk, made.c.identity), else_=null()),
        cast(func.row_to_json(literal_column("made")), Text), literal_column(f"'{PENDING}'"),
        bindparam("wh_due", type_=BigInteger),
        made.c.date_created).select_from(made)
    into = outbox_table.insert().from_select(
        ["token", "account_sid", "service_sid", "resource_sid", "event_type", "url", "method", "retries", "source",
         "client_identity", "data", "status", "due_at", "date_created"], rows)
    return select(made).add_cte(into.cte("posted"))


_BY_IDENTITIES_PG, _ = _pg(BY_IDENTITIES)
_INSERT_MANY_PG, _INSERT_DEFAULTS = _pg(INSERT_MANY_PG)
_INSERT_MANY_POSTED_PG, _ = _pg(_with_user_added(INSERT_MANY_PG))
_SERVICE_EXISTS_PG, _ = _pg(SERVICE_EXISTS)
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


async def get_many(apg: Any, service_sid: str, identities: list[str]) -> dict[str, User]:
    """store/users.get_many on the async pool: one `= ANY(…)` statement."""
    rows = await apg.fetchall(_BY_IDENTITIES_PG, {"service_sid": service_sid, "identities": sorted(identities)})
    return {row["identity"]: row for row in rows}


async def insert_many(apg: Any, service: Mapping[str, Any], identities: list[str],
                      sdk: frozenset[str] = frozenset()) -> dict[str, User]:
    """store/users.insert_many on the async pool (autocommit): one statement, identities sorted,
    with its onUserAdded outbox rows when the service wants them (`sdk`: the identities that
    presented a token). A default role switched and deleted between the statement's read and its
    write is retried: the next statement reads the default committed now."""
    wanted, ts = sorted(identities), now()
    params = dict(_INSERT_DEFAULTS, service_sid=service["sid"], ts=ts, sids=[new_sid("US") for _ in wanted],
                  identities=wanted)
    sql = _INSERT_MANY_PG
    if outbox.wants(service, "onUserAdded"):
        sql = _INSERT_MANY_POSTED_PG
        params.update(wh_sdk=sorted(sdk), wh_url=service["post_webhook_url"],
                      wh_method=service.get("webhook_method") or "POST",
                      wh_retries=int(service.get("post_webhook_retry_count") or 0), wh_due=outbox.ms())
    for attempt in range(1, _ROLE_RACE_RETRIES + 1):
        try:
            return {row["identity"]: row for row in await apg.fetchall(sql, params)}
        except ForeignKeyViolation:
            if attempt == _ROLE_RACE_RETRIES:
                raise errors.database_busy() from None
    raise AssertionError("unreachable")


async def _first_encounters(apg: Any, service: Mapping[str, Any], identities: list[str],
                            sdk: frozenset[str]) -> dict[str, Outcome]:
    made = await insert_many(apg, service, identities, sdk)
    lost = [identity for identity in identities if identity not in made]
    winners = await get_many(apg, service["sid"], lost) if lost else {}
    exists = all(identity in winners for identity in lost) or bool(
        await apg.fetchall(_SERVICE_EXISTS_PG, {"service_sid": service["sid"]}))
    return settle_outcomes(identities, made, winners, service_exists=exists)


async def _read_batch(apg: Any, items: list[tuple[str, str]]) -> list[Any]:
    """Users of (service_sid, identity) pairs, None where there is none: one statement per
    service, the services' statements concurrent; a failed statement fails only its items."""
    wanted: dict[str, set[str]] = {}
    for service_sid, identity in items:
        wanted.setdefault(service_sid, set()).add(identity)
    outcomes = dict(zip(wanted, await _each(*(get_many(apg, s, list(ids)) for s, ids in wanted.items())),
                        strict=True))
    return [outcome if isinstance(outcome := outcomes[sid], BaseException) else outcome.get(identity)
            for sid, identity in items]


async def _create_batch(apg: Any, items: list[tuple[Mapping[str, Any], str, bool]]) -> list[Any]:
    """get-or-create's second half for (service, identity, by a presented token) not found a
    moment ago, a statement per service (concurrently). Per item (user, created), or the error to
    raise for it; of several callers for one identity, one is its creator."""
    wanted: dict[str, tuple[Mapping[str, Any], set[str], set[str]]] = {}
    for svc, identity, by_token in items:
        entry = wanted.setdefault(svc["sid"], (svc, set(), set()))
        entry[1].add(identity)
        if by_token:
            entry[2].add(identity)
    outcomes = await _each(*(_first_encounters(apg, svc, sorted(ids), frozenset(sdk))
                             for svc, ids, sdk in wanted.values()))
    by_service = dict(zip(wanted, outcomes, strict=True))
    results: list[Any] = []
    for svc, identity, _ in items:
        outcome = by_service[svc["sid"]]
        result = outcome if isinstance(outcome, BaseException) else outcome[identity]
        if isinstance(result, tuple) and result[1]:
            outcome[identity] = (result[0], False)  # one creator; the others found it
        results.append(result)
    return results


def _batchers(apg: Any) -> tuple[Batcher[tuple[str, str], User | None],
                                 Batcher[tuple[Mapping[str, Any], str, bool], tuple[User, bool]]]:
    found = apg.batchers.get("users.read")
    if found is None:
        found = apg.batchers["users.read"] = Batcher(lambda items: _read_batch(apg, items))
        apg.batchers["users.create"] = Batcher(lambda items: _create_batch(apg, items))
    return found, apg.batchers["users.create"]


Ask = Callable[[], Awaitable[Mapping[str, Any]]]


async def ensure_user(db: Database, *, service: Mapping[str, Any], identity: str,
                      ask: Ask | None = None) -> tuple[User, bool]:
    """get_or_create for request handlers. SQLite: the read inline, a first encounter's insert
    group-committed with concurrent ones. PostgreSQL: batched statements on the async pool.
    `ask` (an onUserAdd hook) is awaited before a first encounter writes: it may refuse (raise)
    or give the new user's fields, which are then written in a transaction of their own."""
    if db.apg is not None:
        read, create = _batchers(db.apg)
        found = await read((service["sid"], identity))
        if found is not None:
            return found, False
        if ask is None:
            return await create((service, identity, False))
    else:
        found = await db.read(lambda conn: find_by_identity(conn, service_sid=service["sid"], identity=identity))
        if found is not None:
            return found, False
    fields = await ask() if ask is not None else None
    if db.apg is not None and not fields:
        # allowed as it is: the batched first encounter of the no-hook path (a sync transaction
        # on the thread pool costs ~1.5 ms of CPU more, bench/webhooks.py's hook ratio)
        return await create((service, identity, False))
    return await db.write(lambda conn: get_or_create(conn, service, identity, fields=fields))


def get_or_create_unburied(conn: Any, *, service: Mapping[str, Any], identity: str, issued_at: int,
                           graves: Tombstones, fields: Mapping[str, Any] | None = None) -> tuple[User, bool]:
    """get_or_create for a presented token: 401 20101 when the identity was deleted at or after
    the token's issue time. Asked in the writing transaction, so no deletion slips between."""
    if graves.refuses(conn, service_sid=service["sid"], identity=identity, issued_at=issued_at):
        raise tombstone_refusal()
    return get_or_create(conn, service, identity, outbox.sdk(identity), fields)


async def ensure_token_user(db: Database, *, service: Mapping[str, Any], identity: str, issued_at: int,
                            graves: Tombstones, ask: Ask | None = None) -> tuple[User, bool]:
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
        if ask is not None and graves.refuses_since(await graves.deleted_at(db, service_sid=sid, identity=identity),
                                                    issued_at):
            raise tombstone_refusal()  # the hook is not asked about a token refused anyway
        fields = await ask() if ask is not None else None
        return await db.write(lambda conn: get_or_create_unburied(conn, service=service, identity=identity,
                                                                  issued_at=issued_at, graves=graves, fields=fields))
    if graves.refuses_since(await graves.deleted_at(db, service_sid=sid, identity=identity), issued_at):
        raise tombstone_refusal()
    if ask is None:
        return await create((service, identity, True))
    fields = await ask()
    if not fields:  # allowed as it is: the batched first encounter, as without a hook
        return await create((service, identity, True))
    return await db.write(lambda conn: get_or_create_unburied(conn, service=service, identity=identity,
                                                              issued_at=issued_at, graves=graves, fields=fields))


class _InTransaction:
    """provision's statements on one connection of an open transaction (a member add's), in
    place of the autocommit pool: the user it creates commits or rolls back with the member."""

    def __init__(self, conn: Any):
        self.conn = conn

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            cur = await self.conn.execute(sql, params)
        except ForeignKeyViolation:
            # The default role switched and deleted between the statement's read and its write:
            # this transaction is spoilt, so no retry in it (as the sync path: 503 20503).
            raise errors.database_busy() from None
        return await cur.fetchall()


async def first_encounters_in(conn: Any, service: Mapping[str, Any], identities: list[str]) -> dict[str, Outcome]:
    """store/users' first encounters on a psycopg AsyncConnection in a transaction (a batch of
    member adds, store/member_batch.py): the token endpoint's INSERT … ON CONFLICT DO NOTHING,
    with its onUserAdded rows, and its race rule (_first_encounters); the users commit or roll
    back with the members."""
    return await _first_encounters(_InTransaction(conn), service, sorted(identities), frozenset())
