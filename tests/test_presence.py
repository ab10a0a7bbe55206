"""The presence writer (tokensvc/presence.py) on a real database: batching, heartbeats, repair."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import delete, select

from tokensvc.connect import Session
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


def test_concurrent_joins_share_one_transaction_and_provision_once(db: Database) -> None:
    svc = _service(db)
    registry = CollectorRegistry()
    writes = Counter("w", "w", ["kind"], registry=registry)

    async def scenario() -> None:
        presence = Presence(db, node="node-batch", timeout=30, interval=10, writes=writes, on_gone=lambda s: None)
        presence.start()
        sessions = [Session(None) for _ in range(40)]  # type: ignore[arg-type]  # no WebSocket: presence never touches it
        identities = [f"id-{i % 20}" for i in range(40)]  # every identity twice in the same burst
        results = await asyncio.gather(*(presence.join(s, svc, i) for s, i in zip(sessions, identities, strict=True)))
        assert registry.get_sample_value("w_total", {"kind": "join"}) == 1
        by_identity: dict[str, set[str]] = {}
        for (user, _), identity in zip(results, identities, strict=True):
            by_identity.setdefault(identity, set()).add(user["sid"])
        assert all(len(sids) == 1 for sids in by_identity.values())  # one user per identity
        assert sum(created for _, created in results) == 20
        assert set(_rows(db, "node-batch")) == {s.id for s in sessions}
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
    gone: list[Session] = []
    writes = Counter("w", "w", ["kind"], registry=CollectorRegistry())

    async def scenario() -> None:
        presence = Presence(db, node="node-beat", timeout=2, interval=1, writes=writes, on_gone=gone.append)
        presence.start()
        kept, swept, deleted = (Session(None) for _ in range(3))  # type: ignore[arg-type]  # no WebSocket: presence never touches it
        await presence.join(kept, svc, "kept")
        await presence.join(swept, svc, "swept")
        user, _ = await presence.join(deleted, svc, "deleted")
        before = _rows(db, "node-beat")

        # Another process swept one row by mistake, and deleted another's user (the row cascades).
        db.call(lambda c: c.execute(delete(connections).where(connections.c.id == swept.id)))
        db.call(lambda c: c.execute(delete(users).where(users.c.sid == user["sid"])))
        await asyncio.sleep(2.2)  # past a heartbeat (1 s), whatever the second boundaries

        after = _rows(db, "node-beat")
        assert set(after) == {kept.id, swept.id}
        assert after[kept.id] > before[kept.id]  # renewed
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

    def vanishing(conn, *, service, identity):
        if identity == "ghost":  # read a moment ago; deleted before this batch's insert
            return {"sid": "US" + "0" * 32, "identity": "ghost", "was_online": False}, False
        return real(conn, service=service, identity=identity)

    monkeypatch.setattr(presence_mod, "get_or_create", vanishing)
    writes = Counter("w", "w", ["kind"], registry=CollectorRegistry())

    async def scenario():
        presence = Presence(db, node="node-ghost", timeout=30, interval=10, writes=writes, on_gone=lambda s: None)
        presence.start()
        alice, ghost = Session(None), Session(None)  # type: ignore[arg-type]  # no WebSocket: presence never touches it
        results = await asyncio.gather(presence.join(alice, svc, "alice"), presence.join(ghost, svc, "ghost"),
                                       return_exceptions=True)
        rows = _rows(db, "node-ghost")
        await presence.stop()
        return results, rows, alice

    (alice_result, ghost_result), rows, alice = asyncio.run(scenario())
    assert isinstance(ghost_result, Exception)
    assert isinstance(alice_result, tuple) and alice_result[1] is True, alice_result  # created by this join
    assert set(rows) == {alice.id}


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
        presence = Presence(db, node="node-stop", timeout=30, interval=10, writes=writes, on_gone=lambda s: None)
        presence.start()
        busy = asyncio.ensure_future(db.write(slow))
        await asyncio.sleep(0.05)
        joining = asyncio.ensure_future(presence.join(Session(None), svc, "late"))  # type: ignore[arg-type]  # no WebSocket: presence never touches it
        await asyncio.sleep(0.05)  # the writer submitted the join; it waits behind `slow`
        await presence.stop()
        done, _ = await asyncio.wait([joining], timeout=2)
        await busy
        await asyncio.sleep(0.3)
        return done, joining

    done, joining = asyncio.run(scenario())
    assert done and isinstance(joining.exception(), Stopping)
    assert _rows(db, "node-stop") == {}
