"""Presence in the database (SPEC §5): one `connections` row per open client connection.

Presence knows a connection only by its id (a string the hub assigns), and keeps per id just the
user and service its row names: `join(cid, …)` provisions the user and writes the row, `leave(cid)`
(idempotent) deletes it, `forget_user` / `forget_service` drop the ids whose rows went with a
deleted user or service and report each through `on_gone(cid)`, the one way presence tells its
owner that a connection must close.

Rows are written by a single writer task per process that batches what many connections ask for
into one transaction (group commit: a burst of connects costs a few commits, not one each) and
renews the heartbeat of all of this process's rows with one UPDATE every `heartbeat_interval`.
A process that dies without closing leaves rows whose heartbeat goes stale; `users.is_online`
ignores them and any process sweeps them. Rows of live connections that vanished anyway are
restored by the heartbeat; those whose user is gone too are reported through `on_gone` (a
backstop: deletions reach every process sooner as kicks, kicks.py).

A join that loses a race with the deletion of its user or service (the foreign key refuses the
row) is refused with a TwilioError, as is a token issued before its identity was deleted
(tombstones.py): the connection closes with an error frame, never with a server error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from . import errors
from .db import insert_ignore, is_foreign_key_violation, now, settle
from .store.outbox import sdk
from .store.tables import connections, users
from .store.tombstones import Tombstones
from .store.tombstones import refused as tombstone_refusal
from .store.users import get_many, get_or_create

log = logging.getLogger("tokensvc.presence")

BATCH_WINDOW = 0.01  # in a burst of connects, gather this long before committing a batch
_BURST = 0.05  # a flush within this long of the previous one means a burst is on
_CHUNK = 500  # ids per IN (...) list


class Stopping(Exception):
    """The server is stopping: the session was not recorded."""


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


class _Join:
    __slots__ = ("cid", "service", "identity", "issued_at", "future")

    def __init__(self, cid: str, service: Mapping[str, Any], identity: str, issued_at: int | None,
                 future: asyncio.Future):
        self.cid = cid
        self.service = service
        self.identity = identity
        self.issued_at = issued_at
        self.future = future


def _gone() -> errors.TwilioError:
    """A join that lost its race with the deletion of its user or service."""
    return errors.not_found("The User or its Service was deleted while connecting")


# ---- the store: plain functions of a Connection, run through Database.run -------------------

# Statements built once (building a Core statement costs more than running it); IN lists expand.
_MARK_ONLINE = update(users).where(users.c.sid.in_(bindparam("b_sids", expanding=True))).values(was_online=True)
_USERS_ALIVE = select(users.c.sid).where(users.c.sid.in_(bindparam("b_sids", expanding=True)))
_INSERT_ROWS = connections.insert()
_DELETE_ROWS = delete(connections).where(connections.c.id.in_(bindparam("b_ids", expanding=True)))
_RENEW = update(connections).where(connections.c.node == bindparam("b_node")).values(heartbeat_at=bindparam("b_ts"))
_NODE_ROWS = select(connections.c.id).where(connections.c.node == bindparam("b_node"))
_DELETE_NODE = delete(connections).where(connections.c.node == bindparam("b_node"))
_SWEEP = delete(connections).where(connections.c.heartbeat_at < bindparam("b_cutoff"))


def _join_rows(conn: Connection, items: list[tuple[str, Mapping[str, Any], str, int | None]], node: str,
               ts: int, graves: Tombstones | None = None) -> list[Any]:
    """Provision each identity and insert its connection row, in one transaction. Returns per
    item (user, created) or the TwilioError that refused it.

    Returning identities, the usual case, cost one read per service (store/users.get_many); only
    those not found go through get_or_create, which settles races for them in the database. An item
    carries its token's issue time: one whose user is missing or younger than the token asks
    `graves` whether the token predates the identity's deletion (SPEC §11)."""
    wanted: dict[str, set[str]] = {}
    for _, svc, identity, _ in items:
        wanted.setdefault(svc["sid"], set()).add(identity)
    known: dict[tuple[str, str], Mapping[str, Any]] = {}
    for service_sid, identities in wanted.items():
        for identity, row in get_many(conn, service_sid, identities).items():
            known[(service_sid, identity)] = row
    # Tombstones are asked about only for users missing or younger than the token, in one read.
    deleted: dict[tuple[str, str], int] = {}
    if graves is not None:
        asked = {(svc["sid"], identity) for _, svc, identity, issued_at in items if issued_at is not None
                 and graves.must_ask(known.get((svc["sid"], identity)), issued_at)}
        if asked:
            deleted = graves.deleted_many(conn, asked)
    results: list[Any] = []
    rows: list[dict[str, Any]] = []
    first_online: set[str] = set()
    for cid, svc, identity, issued_at in items:
        user = known.get((svc["sid"], identity))
        created = False
        if issued_at is not None and Tombstones.must_ask(user, issued_at) and Tombstones.refuses_since(
                deleted.get((svc["sid"], identity)), issued_at):
            results.append(tombstone_refusal())
            continue
        if user is None:
            try:
                user, created = get_or_create(conn, service=svc, identity=identity, origin=sdk(identity))
            except errors.TwilioError as exc:
                results.append(exc)
                continue
            known[(svc["sid"], identity)] = user
        results.append((user, created))
        rows.append({"id": cid, "user_sid": user["sid"], "service_sid": svc["sid"], "node": node,
                     "heartbeat_at": ts, "date_created": ts})
        if not user["was_online"]:
            first_online.add(user["sid"])
    if rows:
        conn.execute(_INSERT_ROWS, rows)
    for chunk in _chunks(sorted(first_online)):
        conn.execute(_MARK_ONLINE, {"b_sids": list(chunk)})
    return results


def _delete_rows(conn: Connection, ids: list[str]) -> None:
    for chunk in _chunks(ids):
        conn.execute(_DELETE_ROWS, {"b_ids": list(chunk)})


def _renew(conn: Connection, node: str, ts: int, expected: int) -> set[str] | None:
    """Renew every row of this node in one UPDATE. When fewer rows matched than this process
    holds, some were deleted elsewhere: return the ids still present so the caller can tell."""
    matched = conn.execute(_RENEW, {"b_node": node, "b_ts": ts}).rowcount
    if matched == expected:
        return None
    return set(conn.execute(_NODE_ROWS, {"b_node": node}).scalars())


def _repair(conn: Connection, missing: dict[str, tuple[str, str]], extra: list[str], node: str,
            ts: int) -> set[str]:
    """Rows of live sessions vanished: those whose user still exists were swept by mistake (this
    process stalled past the timeout) and come back; returns the ids whose user is gone."""
    if extra:
        _delete_rows(conn, extra)
    user_sids = sorted({u for u, _ in missing.values()})
    alive: set[str] = set()
    for chunk in _chunks(user_sids):
        alive.update(conn.execute(_USERS_ALIVE, {"b_sids": list(chunk)}).scalars())
    gone = set()
    for cid, (user_sid, service_sid) in missing.items():
        if user_sid in alive:
            insert_ignore(conn, connections, {"id": cid, "user_sid": user_sid, "service_sid": service_sid,
                                              "node": node, "heartbeat_at": ts, "date_created": ts})
        else:
            gone.add(cid)
    return gone


def _sweep(conn: Connection, cutoff: int) -> int:
    """Delete rows of dead processes (heartbeat older than the presence timeout)."""
    return conn.execute(_SWEEP, {"b_cutoff": cutoff}).rowcount


def _delete_node(conn: Connection, node: str) -> None:
    conn.execute(_DELETE_NODE, {"b_node": node})


def _is_unavailable(exc: Exception) -> bool:
    return isinstance(exc, errors.TwilioError) and exc.status >= 500


def _refusal(exc: Exception) -> Exception:
    """The error a join's session is closed with: a foreign key that refused its row means its
    user or service was deleted meanwhile (PostgreSQL: between our read and our insert)."""
    if isinstance(exc, IntegrityError) and is_foreign_key_violation(exc):
        return _gone()
    return exc


# ---- the writer ------------------------------------------------------------------------------


class Presence:
    """This process's connection rows, written by one task: joins and leaves are batched into one
    transaction each per wake-up, heartbeats are one UPDATE per interval for all rows."""

    def __init__(self, db: Any, *, node: str, timeout: int, interval: float, writes: Counter,
                 on_gone: Callable[[str], None], graves: Tombstones | None = None):
        self.db = db
        self.node = node
        self.timeout = timeout
        # A row must be renewed well within the timeout, whatever the configuration says.
        self.interval = max(0.2, min(float(interval), timeout / 2))
        self.writes = writes
        self.on_gone = on_gone
        self.graves = graves
        self._rows: dict[str, tuple[str, str]] = {}  # committed rows of this node: cid -> (user, service)
        self._joins: list[_Join] = []
        self._leaves: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def __len__(self) -> int:
        """How many connections of this process have a committed row."""
        return len(self._rows)

    def __contains__(self, cid: object) -> bool:
        return cid in self._rows

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tokensvc-presence")

    async def stop(self) -> None:
        """Stop writing and remove this node's rows (its connections are over)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for join in self._joins:
            if not join.future.done():
                join.future.set_exception(Stopping())
        self._joins.clear()
        self._leaves.clear()
        self._rows.clear()
        try:
            # Through the writer's queue: after any batch still being written for this node.
            await self.db.write(_delete_node, self.node)
            self.writes.labels("leave").inc()
        except Exception:
            log.warning("could not remove this process's connection rows; they expire with their heartbeat")

    async def join(self, cid: str, service: Mapping[str, Any], identity: str,
                   issued_at: int | None = None) -> tuple[Mapping[str, Any], bool]:
        """Provision the identity's user (unless a token issued at `issued_at` predates its
        deletion) and record connection `cid` as online; (user, created)."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._joins.append(_Join(cid, service, identity, issued_at, future))
        self._wake.set()
        return await future

    def leave(self, cid: str) -> None:
        """The connection is over: its row goes on the writer's next wake-up. Idempotent; a
        connection without a row (never joined, forgotten, left already) costs no write."""
        self._leaves.append(cid)
        self._wake.set()

    def forget_user(self, service_sid: str, user_sid: str) -> None:
        """The user was deleted (its rows with it): forget its connections, each through on_gone."""
        self._forget([cid for cid, row in self._rows.items() if row == (user_sid, service_sid)])

    def forget_service(self, service_sid: str) -> None:
        """The service was deleted (its users' rows with it): forget its connections, each
        through on_gone."""
        self._forget([cid for cid, row in self._rows.items() if row[1] == service_sid])

    def _forget(self, cids: list[str]) -> None:
        for cid in cids:
            if self._rows.pop(cid, None) is not None:
                self.on_gone(cid)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.interval
        next_sweep = loop.time() + self.timeout
        last_join = 0.0
        while True:
            if not (self._joins or self._leaves):
                try:
                    async with asyncio.timeout_at(next_beat):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                if self._joins:
                    # Alone, a connect is written at once; in a burst, a few ms more fill the batch.
                    if loop.time() - last_join < _BURST and len(self._joins) < _CHUNK:
                        await asyncio.sleep(BATCH_WINDOW)
                    last_join = loop.time()
                    await self._flush_joins()
                if self._leaves:  # after the joins: a leave may name a join of this very batch
                    await self._flush_leaves()
                t = loop.time()
                if t >= next_beat:
                    next_beat = t + self.interval
                    await self._beat()
                    if t >= next_sweep:
                        next_sweep = t + self.timeout
                        await self._guard("sweep", self.db.write(_sweep, now() - self.timeout))
            except Exception:
                # The writer must outlive any bug: connections wait on it.
                log.exception("presence writer failed; continuing")
                await asyncio.sleep(0.1)

    async def _guard(self, what: str, work: Any) -> Any:
        try:
            result = await work
        except Exception as exc:  # the class only: no statement, no parameter, no traceback
            log.warning("presence %s failed (%s); retried on the next beat", what, type(exc).__name__)
            return None
        self.writes.labels(what).inc()
        return result

    async def _flush_joins(self) -> None:
        batch, self._joins = self._joins, []
        # db.settle: each connection its outcome; stop() cancelling the write closes them (Stopping).
        await settle([join.future for join in batch], self._record_joins(batch), stopping=Stopping)

    async def _record_joins(self, batch: list[_Join]) -> list[Any]:
        try:
            results = await self._write_joins(batch)
            self.writes.labels("join").inc()
            for join, result in zip(batch, results, strict=True):
                if isinstance(result, tuple):
                    self._rows[join.cid] = (result[0]["sid"], join.service["sid"])
                    if join.future.done():  # the connection went away meanwhile
                        self._leaves.append(join.cid)
            return results
        except Exception:  # a bug: its connections fail with it, and the writer goes on
            log.exception("presence writer failed; continuing")
            raise

    async def _write_joins(self, batch: list[_Join]) -> list[Any]:
        ts = now()
        items = [(j.cid, j.service, j.identity, j.issued_at) for j in batch]
        try:
            return await self.db.write(_join_rows, items, self.node, ts, self.graves)
        except Exception as exc:
            if len(batch) == 1 or _is_unavailable(exc):
                # The database itself refused (busy behind another process's lock): every item
                # would wait its own bounded turn and fail alike, while heartbeats stall behind.
                return [_refusal(exc)] * len(batch)
        # One bad item (e.g. its user deleted meanwhile) must not fail the others.
        results: list[Any] = []
        for item in items:
            try:
                results.extend(await self.db.write(_join_rows, [item], self.node, ts, self.graves))
            except Exception as single:
                results.append(_refusal(single))
        return results

    async def _flush_leaves(self) -> None:
        ids, self._leaves = self._leaves, []
        mine = [cid for cid in ids if self._rows.pop(cid, None) is not None]
        if mine:
            # On failure the rows stay: the heartbeat's repair or the sweep removes them.
            await self._guard("leave", self.db.write(_delete_rows, mine))

    async def _beat(self) -> None:
        if not self._rows:
            return
        expected = dict(self._rows)
        present = await self._guard("heartbeat", self.db.write(_renew, self.node, now(), len(expected)))
        if present is None:
            return
        missing = {cid: row for cid, row in expected.items() if cid in self._rows and cid not in present}
        extra = [cid for cid in present if cid not in self._rows]
        gone = await self._guard("repair", self.db.write(_repair, missing, extra, self.node, now()))
        self._forget(sorted(gone or ()))
