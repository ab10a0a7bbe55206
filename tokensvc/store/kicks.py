"""Kicks: how one process tells every other one to close client sessions (SPEC §5, §6).

A change that ends sessions (a user, service or API key deleted; next a role changed or tokens
revoked) writes one `kicks` row in its own transaction, so the signal commits with the change
or not at all. Every Hub holding sessions reads the rows it has not seen every poll (one read on
the primary key) and closes its matching sessions; rows are pruned after KEEP seconds.

Ids only grow, but on PostgreSQL they are taken at insert and become visible at commit, so a
smaller id can appear after a larger one was read. The reader remembers the ids it skipped over
and asks for them again for GAP_WAIT seconds; after that a transaction that held its id open
that long is given up on (a delete's transaction is a few statements).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, or_, select

from ..db import Database, now
from .tables import kicks

USER = "user"  # sid: the user; service_sid: its service
SERVICE = "service"  # sid: the service
API_KEY = "api_key"  # sid: the API key

KEEP = 600  # seconds a row stays: longer than any reader's poll, with room for a stalled one
GAP_WAIT = 30.0  # seconds a skipped-over id is asked for again
_MAX_GAPS = 1000  # a sequence that jumped (PostgreSQL after a crash) is not tracked id by id
_PAGE = 1000

_LATEST = select(func.max(kicks.c.id))
_SINCE = (select(kicks.c.id, kicks.c.kind, kicks.c.sid, kicks.c.service_sid)
          .where(kicks.c.id > bindparam("b_after")).order_by(kicks.c.id).limit(_PAGE))
_SINCE_OR_GAPS = (select(kicks.c.id, kicks.c.kind, kicks.c.sid, kicks.c.service_sid)
                  .where(or_(kicks.c.id > bindparam("b_after"),
                             kicks.c.id.in_(bindparam("b_gaps", expanding=True))))
                  .order_by(kicks.c.id).limit(_PAGE))
_PRUNE = delete(kicks).where(kicks.c.date_created < bindparam("b_cutoff"))


@dataclass(frozen=True)
class Kick:
    id: int
    kind: str
    sid: str
    service_sid: str | None


def record(conn: Connection, kind: str, sid: str, *, service_sid: str | None = None) -> None:
    """Ask every process to close the sessions of `sid` (in the caller's transaction)."""
    conn.execute(kicks.insert(), {"kind": kind, "sid": sid, "service_sid": service_sid, "date_created": now()})


def latest(conn: Connection) -> int:
    """The id of the newest row (0 when none): where a new reader starts."""
    return conn.execute(_LATEST).scalar() or 0


def since(conn: Connection, after: int, gaps: Sequence[int] = ()) -> list[Kick]:
    """Rows newer than `after`, and those of the ids in `gaps`, oldest first (a page of them)."""
    if gaps:
        result = conn.execute(_SINCE_OR_GAPS, {"b_after": after, "b_gaps": list(gaps)})
    else:
        result = conn.execute(_SINCE, {"b_after": after})
    return [Kick(*row) for row in result]


def prune(conn: Connection, cutoff: int) -> int:
    """Delete rows older than `cutoff` (epoch seconds)."""
    return conn.execute(_PRUNE, {"b_cutoff": cutoff}).rowcount


class Reader:
    """One process's position in the kicks: the newest id seen and the ids skipped over."""

    def __init__(self, start: int):
        self.cursor = start
        self.gaps: dict[int, float] = {}  # id -> when it was skipped over (monotonic)

    def take(self, rows: Sequence[Kick], clock: float | None = None) -> list[Kick]:
        """Advance past `rows` (from `since(conn, self.cursor, self.gaps)`); the ones not seen before."""
        t = time.monotonic() if clock is None else clock
        fresh: list[Kick] = []
        for row in rows:
            if row.id > self.cursor:
                for skipped in range(max(self.cursor + 1, row.id - _MAX_GAPS), row.id):
                    self.gaps[skipped] = t
                self.cursor = row.id
                fresh.append(row)
            elif self.gaps.pop(row.id, None) is not None:
                fresh.append(row)
        for gap, seen in list(self.gaps.items()):
            if t - seen > GAP_WAIT:
                del self.gaps[gap]
        return fresh

    async def poll(self, db: Database) -> list[Kick]:
        """The rows not seen before, all pages of them."""
        fresh: list[Kick] = []
        while True:
            rows = await db.read(since, self.cursor, sorted(self.gaps))
            fresh.extend(self.take(rows))
            if len(rows) < _PAGE:
                return fresh
