"""The presence writer (tokensvc/presence.py) on a real database: batching, heartbeats, repair,
and connections known only by their id: idempotent leaves, forgotten users and services."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import delete, select

from tokensvc.db import Database
from tokensvc.presence import Presence
from tokensvc.store.accounts import create_account
from tokensvc.store.services import create_service
from tokensvc.store.tables import connections, users


def _rows(db: Database, node: str) -> dict[str, int]:
    return dict(db.call(lambda c: c.execute(select(connections.c.id, connections.c.heartbeat_at)
                                            .where(connections.c.node == node)).all()))


def _service(db: Database) -> dict[str, Any]:
    account = db.call(lambda c: create_account(c))
    return db.call(lambda c: dict(create_service(c, account_sid=account.sid, friendly_name="presence")))


def _cids(n: int, prefix: str = "CN") -> list[str]:
    return [f"{prefix}{uuid.uuid4().hex}" for _ in range(n)]


def _writes() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    return registry, Counter("w", "w", ["kind"], registry=registry)


def test_concurrent_joins_share_one_transaction_and_provision_once(db: Database) -> None:
    svc = _service(db)
    registry = CollectorRegistry()
    writes = Counter("w", "w", ["kind"], registry=registry)

    async def scenario() -> None:
        presence = Presence(db, node="node-batch", timeout=30, interval=10, writes=writes, on_gone=lambda cid: None)
        presence.start()
        sessions = _cids(40)
        identities = [f"id-{i % 20}" for i in range(40)]  # every identity twice in the same burst
        results = await asyncio.gather(*(presence.join(s, svc, i) for s, i in zip(sessions, identities, strict=True)))
        assert registry.get_sample_value("w_total", {"kind": "join"}) == 1
        by_identity: dict[str, set[str]] = {}
        for (user, _), identity in zip(results, identities, strict=True):
            by_identity.setdefault(identity, set()).add(user["sid"])
        assert all(len(sids) == 1 for sids in by_identity.values())  # one user per identity
        assert sum(created for _, created in results) == 20
        assert set(_rows(db, "node-batch")) == set(sessions)
        assert len(presence) == 40 and sessions[0] in presence
        online = db.call(lambda c: c.execute(select(users.c.was_online)
                                             .where(users.c.service_sid == svc["sid"])).scalars().all())
        assert online == [True] * 20
        for s in sessions:
            presence.leave(s)
        await asyncio.sleep(0.1)
        assert _rows(db, "node-batch") == {}
        await presence.stop()

    asyncio.run(scenario())


def test_heartbeat_renews_restores_swept_rows_and_reports_deleted_users(db: Database) -> None:
    svc = _service(db)
    gone: list[str] = []
    writes = Counter("w", "w", ["kind"], registry=CollectorRegistry())

    async def scenario() -> None:
        presence = Presence(db, node="node-beat", timeout=2, interval=1, writes=writes, on_gone=gone.append)
        presence.start()
        kept, swept, deleted = _cids(3)
        await presence.join(kept, svc, "kept")
        await presence.join(swept, svc, "swept")
        user, _ = await presence.join(deleted, svc, "deleted")
        before = _rows(db, "node-beat")

        # Another process swept one row by mistake, and deleted another's user (the row cascades)
        # without a kick reaching this process: the heartbeat is the backstop.
        db.call(lambda c: c.execute(delete(connections).where(connections.c.id == swept)))
        db.call(lambda c: c.execute(delete(users).where(users.c.sid == user["sid"])))
        await asyncio.sleep(2.2)  # past a heartbeat (1 s), whatever the second boundaries

        after = _rows(db, "node-beat")
        assert set(after) == {kept, swept}
        assert after[kept] > before[kept]  # renewed
        assert gone == [deleted]
        await presence.stop()
        assert _rows(db, "node-beat") == {}  # a stopping process takes its rows with it

    asyncio.run(scenario())


def test_a_vanished_user_fails_only_its_own_join(db: Database, monkeypatch) -> None:
    """A batch where one row's user is gone by the insert (deleted by another request): that
    join fails, the others succeed as if alone (the failed attempt left nothing behind)."""
    import tokensvc.presence as presence_mod

    svc = _service(db)
    real = presence_mod.get_or_create

    def vanishing(conn, *, service, identity, origin):
        if identity == "ghost":  # read a moment ago; deleted before this batch's insert
            return {"sid": "US" + "0" * 32, "identity": "ghost", "was_online": False}, False
        return real(conn, service=service, identity=identity, origin=origin)

    monkeypatch.setattr(presence_mod, "get_or_create", vanishing)
    writes = Counter("w", "w", ["kind"], registry=CollectorRegistry())

    async def scenario():
        presence = Presence(db, node="node-ghost", timeout=30, interval=10, writes=writes, on_gone=lambda cid: None)
        presence.start()
        alice, ghost = _cids(2)
        results = await asyncio.gather(presence.join(alice, svc, "alice"), presence.join(ghost, svc, "ghost"),
                                       return_exceptions=True)
        rows = _rows(db, "node-ghost")
        await presence.stop()
        return results, rows, alice

    (alice_result, ghost_result), rows, alice = asyncio.run(scenario())
    assert isinstance(ghost_result, Exception)
    assert isinstance(alice_result, tuple) and alice_result[1] is True, alice_result  # created by this join
    assert set(rows) == {alice}


def test_stop_settles_waiting_joins_and_leaves_no_rows(db: Database) -> None:
    """stop() while a join waits behind another write: the join is refused (Stopping), and no row
    of this node is written after stop() removed them."""
    import time

    from tokensvc.presence import Stopping

    if not db.is_sqlite:
        pytest.skip("the SQLite writer queue")
    svc = _service(db)
    writes = Counter("w", "w", ["kind"], registry=CollectorRegistry())

    def slow(conn):  # a group-committed write in progress (e.g. a burst of first encounters)
        conn.exec_driver_sql("UPDATE accounts SET date_updated = date_updated")
        time.sleep(0.3)

    async def scenario():
        presence = Presence(db, node="node-stop", timeout=30, interval=10, writes=writes, on_gone=lambda cid: None)
        presence.start()
        busy = asyncio.ensure_future(db.write(slow))
        await asyncio.sleep(0.05)
        joining = asyncio.ensure_future(presence.join(_cids(1)[0], svc, "late"))
        await asyncio.sleep(0.05)  # the writer submitted the join; it waits behind `slow`
        await presence.stop()
        done, _ = await asyncio.wait([joining], timeout=2)
        await busy
        await asyncio.sleep(0.3)
        return done, joining

    done, joining = asyncio.run(scenario())
    assert done and isinstance(joining.exception(), Stopping)
    assert _rows(db, "node-stop") == {}


def test_leave_is_idempotent_and_costs_no_write_without_a_row(db: Database) -> None:
    svc = _service(db)
    registry, writes = _writes()

    async def scenario() -> None:
        presence = Presence(db, node="node-leave", timeout=30, interval=10, writes=writes, on_gone=lambda cid: None)
        presence.start()
        joined, never = _cids(2)
        await presence.join(joined, svc, "leaver")
        presence.leave(joined)
        presence.leave(joined)  # twice: e.g. a kicked connection closing
        presence.leave(never)  # a connection refused before it joined
        await asyncio.sleep(0.1)
        assert _rows(db, "node-leave") == {}
        assert joined not in presence and len(presence) == 0
        assert registry.get_sample_value("w_total", {"kind": "leave"}) == 1
        presence.leave(joined)  # long after: nothing to do
        await asyncio.sleep(0.1)
        assert registry.get_sample_value("w_total", {"kind": "leave"}) == 1
        await presence.stop()

    asyncio.run(scenario())


def test_a_leave_racing_its_own_join_removes_the_row(db: Database) -> None:
    """A connection that closes while its join is still queued: the row, once written, goes."""
    svc = _service(db)
    _, writes = _writes()

    async def scenario() -> None:
        presence = Presence(db, node="node-race", timeout=30, interval=10, writes=writes, on_gone=lambda cid: None)
        presence.start()
        cid = _cids(1)[0]
        joining = asyncio.ensure_future(presence.join(cid, svc, "hasty"))
        await asyncio.sleep(0)  # queued, not yet written
        presence.leave(cid)
        await joining
        await asyncio.sleep(0.1)
        assert _rows(db, "node-race") == {} and cid not in presence
        await presence.stop()

    asyncio.run(scenario())


def test_forget_user_and_forget_service_report_exactly_their_connections(db: Database) -> None:
    svc, other = _service(db), _service(db)
    gone: list[str] = []
    registry, writes = _writes()

    async def scenario() -> None:
        presence = Presence(db, node="node-forget", timeout=30, interval=10, writes=writes, on_gone=gone.append)
        presence.start()
        ann1, ann2, bob, elsewhere = _cids(4)
        ann, _ = await presence.join(ann1, svc, "ann")
        await presence.join(ann2, svc, "ann")
        await presence.join(bob, svc, "bob")
        await presence.join(elsewhere, other, "ann")  # the same identity in another service

        presence.forget_user(svc["sid"], ann["sid"])
        assert sorted(gone) == sorted([ann1, ann2])
        assert ann1 not in presence and bob in presence and elsewhere in presence
        presence.forget_user(svc["sid"], ann["sid"])  # a second kick for the same deletion
        assert len(gone) == 2
        presence.leave(ann1)  # the kicked connection closes: its row went with the user, no write
        await asyncio.sleep(0.1)
        assert registry.get_sample_value("w_total", {"kind": "leave"}) is None

        presence.forget_service(svc["sid"])
        assert gone[2:] == [bob] and elsewhere in presence and len(presence) == 1
        presence.forget_service(svc["sid"])
        assert len(gone) == 3
        await presence.stop()

    asyncio.run(scenario())
