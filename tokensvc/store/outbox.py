"""The webhook outbox (SPEC §10), as functions of a connection: `record` inside the transaction of
a change (nothing when the service has no post URL or the event is not in its filters), and the
dispatcher's `claim`, `finish` and `purge`. Claims are atomic on both databases (SQLite: the one
writer; PostgreSQL: FOR UPDATE SKIP LOCKED) and lease rows by moving `due_at` ahead."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, exists, select, update
from sqlalchemy.orm import aliased

from ..db import named_rows, now, sqlite_connection
from .outbox_tables import outbox

PENDING, FAILED = "pending", "failed"
KEEP_FAILED_SECONDS = 7 * 86400


@dataclass(frozen=True)
class Origin:
    """Who caused a change: `SDK` for a client token or connection (with its identity), `API` for
    Basic, the token endpoint, the CLI and the console; `post` says whether its post-events fire
    (Basic REST: only with X-Twilio-Webhook-Enabled: true; provisioning always)."""

    source: str = "API"
    client_identity: str | None = None
    post: bool = True


API = Origin()


def sdk(identity: str | None) -> Origin:
    return Origin("SDK", identity, True)


@lru_cache(maxsize=1024)
def _filters(raw: str) -> frozenset[str]:
    return frozenset(json.loads(raw or "[]"))


def wants(service: Mapping[str, Any], event_type: str) -> bool:
    """Whether the service's post-event of that name fires (a URL set, the name in its filters)."""
    return bool(service.get("post_webhook_url")) and event_type in _filters(service.get("webhook_filters") or "[]")


def ms() -> int:
    return int(time.time() * 1000)


def new_token() -> str:
    return secrets.token_hex(16)  # 32 hex digits, as uuid4().hex, at a third of its cost


def _json(row: Mapping[str, Any]) -> str:
    return json.dumps(dict(row), default=str, separators=(",", ":"))


def _values(service: Mapping[str, Any], event_type: str, rows: Iterable[Mapping[str, Any]],
            origin: Origin) -> list[dict[str, Any]]:
    """The outbox rows of a change's post-event, none when the service does not want it."""
    if not origin.post or not wants(service, event_type):
        return []
    ts, due = now(), ms()
    return [{"token": new_token(), "account_sid": service["account_sid"], "service_sid": service["sid"],
             "resource_sid": row["sid"], "event_type": event_type, "url": service["post_webhook_url"],
             "method": service.get("webhook_method") or "POST",
             "retries": int(service.get("post_webhook_retry_count") or 0), "source": origin.source,
             "client_identity": origin.client_identity, "data": _json(row), "status": PENDING,
             "due_at": due, "date_created": ts} for row in rows]


_INSERT = outbox.insert()
_COLUMNS = tuple(c.key for c in outbox.c if c.key != "id")
# SQLite: the statement on the DBAPI cursor of the SQLAlchemy connection, inside its transaction.
# It runs in the group commit of every first encounter, where SQLAlchemy's insert cost ~100 µs a
# row (cache key, parameter processing) against ~10 µs for the driver itself (bench/webhooks.py).
_INSERT_SQLITE = f"INSERT INTO outbox ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def record(conn: Connection, service: Mapping[str, Any], event_type: str, rows: Iterable[Mapping[str, Any]],
           origin: Origin = API) -> int:
    """Write the post-event of each row (a user, channel or member) if the service wants it; how
    many were written. Call it inside the transaction of the change."""
    values = _values(service, event_type, rows, origin)
    if not values:
        return 0
    if conn.dialect.name == "sqlite":
        cur = sqlite_connection(conn).cursor()
        try:
            cur.executemany(_INSERT_SQLITE, [tuple(v[c] for c in _COLUMNS) for v in values])
        finally:
            cur.close()
    else:
        conn.execute(_INSERT, values)
    return len(values)


@lru_cache(maxsize=1)
def _insert_pg() -> str:
    from sqlalchemy.dialects import postgresql

    return str(outbox.insert().compile(dialect=postgresql.psycopg.dialect(),
                                       column_keys=[c.key for c in outbox.c if c.key != "id"]))


async def record_async(conn: Any, service: Mapping[str, Any], event_type: str, rows: Iterable[Mapping[str, Any]],
                       origin: Origin = API) -> int:
    """record on a psycopg AsyncConnection of an open transaction (PostgreSQL's async paths)."""
    values = _values(service, event_type, rows, origin)
    if values:
        async with conn.cursor() as cur:
            await cur.executemany(_insert_pg(), values)
    return len(values)


_earlier = aliased(outbox)


def claim(conn: Connection, *, limit: int, lease_ms: int, skip_accounts: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Due rows, leased to the caller for `lease_ms`, in id order. A row is not claimed while an
    earlier row of its resource waits (leased elsewhere or backing off): commit order per resource.
    `skip_accounts`: accounts whose webhooks the caller cannot sign (its secrets.key does not open
    their auth token copy), left to another process."""
    t = ms()
    blocked = exists().where(and_(_earlier.c.resource_sid == outbox.c.resource_sid, _earlier.c.id < outbox.c.id,
                                  _earlier.c.status == PENDING, _earlier.c.due_at > t))
    query = select(outbox.c.id).where(outbox.c.status == PENDING, outbox.c.due_at <= t, ~blocked)
    if skip_accounts:
        query = query.where(outbox.c.account_sid.not_in(list(skip_accounts)))
    query = query.order_by(outbox.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=outbox)
    ids = list(conn.execute(query).scalars())
    if not ids:
        return []
    rows = named_rows(conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(due_at=t + lease_ms)
                                   .returning(*outbox.c)))
    return sorted((dict(r) for r in rows), key=lambda r: r["id"])


_DONE = delete(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
_FAIL = update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True))).values(status=FAILED)
_RENEW = (update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)), outbox.c.status == PENDING)
          .values(due_at=bindparam("until")))


def finish(conn: Connection, *, delivered: Sequence[int], failed: Sequence[int], released: Sequence[int] = ()) -> None:
    """Delivered rows go; rows given up on stay `failed` (purged after 7 days); released rows
    (claimed by a process that cannot sign them) are due again at once, for another claimer."""
    if delivered:
        conn.execute(_DONE, {"ids": list(delivered)})
    if failed:
        conn.execute(_FAIL, {"ids": list(failed)})
    if released:
        conn.execute(_RENEW, {"ids": list(released), "until": ms()})  # a lease ending now


def renew(conn: Connection, *, ids: Sequence[int], until: int) -> None:
    """Extend the claim of rows still being delivered to `until` (epoch ms)."""
    conn.execute(_RENEW, {"ids": list(ids), "until": until})


def forget_failed(conn: Connection, *, resource_sid: str) -> None:
    """Drop the rows given up on about a deleted user: kept for inspection, they would keep its
    identity past its deletion (SPEC §3). Pending rows still go out, then go."""
    conn.execute(delete(outbox).where(outbox.c.resource_sid == resource_sid, outbox.c.status == FAILED))


def purge(conn: Connection) -> int:
    """Drop rows given up on more than 7 days ago."""
    cutoff = now() - KEEP_FAILED_SECONDS
    return conn.execute(delete(outbox).where(outbox.c.status == FAILED, outbox.c.date_created < cutoff)).rowcount


@dataclass(frozen=True)
class Chosen:
    """Which rows an operator means (`tokensvc webhooks`): every condition given must hold; none
    given means every row (the callers that change rows refuse that)."""

    account_sid: str | None = None
    service_sid: str | None = None
    status: str | None = None  # PENDING | FAILED
    ids: tuple[int, ...] = ()

    @property
    def anything(self) -> bool:
        return bool(self.account_sid or self.service_sid or self.status or self.ids)

    def where(self) -> list[Any]:
        conditions: list[Any] = []
        if self.account_sid is not None:
            conditions.append(outbox.c.account_sid == self.account_sid)
        if self.service_sid is not None:
            conditions.append(outbox.c.service_sid == self.service_sid)
        if self.status is not None:
            conditions.append(outbox.c.status == self.status)
        if self.ids:
            conditions.append(outbox.c.id.in_(list(self.ids)))
        return conditions


def chosen_rows(conn: Connection, chosen: Chosen, *, after_id: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    """One keyset page of the chosen rows, in id (commit) order, after `after_id`."""
    query = select(outbox).where(outbox.c.id > after_id, *chosen.where()).order_by(outbox.c.id).limit(limit)
    return [dict(r) for r in named_rows(conn.execute(query))]


def requeue(conn: Connection, chosen: Chosen) -> int:
    """The chosen rows given up on are pending again and due now, with the attempts their service
    allowed and the idempotency token they had (a receiver that saw an attempt sees a repeat). They go
    out after any later event of their resource that was delivered meanwhile. How many."""
    return conn.execute(update(outbox).where(outbox.c.status == FAILED, *chosen.where())
                        .values(status=PENDING, due_at=ms())).rowcount


def drop(conn: Connection, chosen: Chosen) -> int:
    """Delete the chosen rows, pending or given up on (one being delivered may still arrive once). How many."""
    return conn.execute(delete(outbox).where(*chosen.where())).rowcount
