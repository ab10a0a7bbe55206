"""Kicks (tokensvc/store/kicks.py): rows written with a change, read by every Hub past its cursor,
ids that commit out of order picked up late, old rows pruned."""

from __future__ import annotations

import asyncio

from tokensvc.db import Database, now
from tokensvc.store import kicks
from tokensvc.store.kicks import Kick, Reader


def _kick(i: int) -> Kick:
    return Kick(i, kicks.USER, f"US{i}", "IS1")


def test_reader_returns_each_kick_once_and_asks_again_for_skipped_ids() -> None:
    reader = Reader(10)
    assert [k.id for k in reader.take([_kick(11), _kick(14)], clock=0.0)] == [11, 14]
    assert reader.cursor == 14 and sorted(reader.gaps) == [12, 13]  # taken, not yet committed
    assert reader.take([_kick(11), _kick(14)], clock=1.0) == []  # seen already
    assert [k.id for k in reader.take([_kick(13)], clock=2.0)] == [13]  # committed late
    assert sorted(reader.gaps) == [12]
    assert reader.take([], clock=kicks.GAP_WAIT + 1) == [] and reader.gaps == {}  # rolled back: given up


def test_rows_are_read_past_the_cursor_in_order_and_pruned_by_age(db: Database) -> None:
    start = db.call(kicks.latest)

    def write(conn):
        kicks.record(conn, kicks.USER, "US" + "1" * 32, service_sid="IS" + "1" * 32)
        kicks.record(conn, kicks.SERVICE, "IS" + "2" * 32)
        kicks.record(conn, kicks.API_KEY, "SK" + "3" * 32)

    async def scenario() -> list[Kick]:
        reader = Reader(start)
        db.call(write)
        first = await reader.poll(db)
        assert await reader.poll(db) == []  # nothing new
        return first

    got = asyncio.run(scenario())
    assert [(k.kind, k.sid[:2], k.service_sid) for k in got] == [
        ("user", "US", "IS" + "1" * 32), ("service", "IS", None), ("api_key", "SK", None)]
    assert got[0].id > start and [k.id for k in got] == sorted(k.id for k in got)
    db.call(kicks.prune, now() - kicks.KEEP)
    assert len(db.call(lambda conn: kicks.since(conn, start))) == 3  # fresh rows stay
    db.call(kicks.prune, now() + 1)
    assert db.call(lambda conn: kicks.since(conn, start)) == []
    # Ids are never handed out again once pruned (SQLite AUTOINCREMENT), or a reader would skip them.
    db.call(lambda conn: kicks.record(conn, kicks.SERVICE, "IS" + "4" * 32))
    assert db.call(kicks.latest) > got[-1].id
