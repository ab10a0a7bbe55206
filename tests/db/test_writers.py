"""The database writers: SQLite's group commit, the PostgreSQL Batcher and async pool, and the
batching they give first encounters."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from tokensvc import errors
from tokensvc.db import Database, GroupCommit, make_engine
from tokensvc.store.accounts import create_account
from tokensvc.store.provision import ensure_user
from tokensvc.store.services import create_service
from tokensvc.store.tables import users
from tokensvc.store.users import get_or_create


@pytest.fixture
def sqlite_db(tmp_path):
    from tokensvc.config import Settings
    from tokensvc.store.schema import ensure_schema

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    ensure_schema(settings)
    db = Database(make_engine(settings))
    yield db
    db.dispose()


def test_concurrent_first_encounters_share_transactions_and_yield_one_user_each(sqlite_db: Database) -> None:
    acc = sqlite_db.call(lambda conn: create_account(conn))
    svc = sqlite_db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))
    batches: list[int] = []
    write = GroupCommit._write

    def counting(self, jobs):
        batches.append(len(jobs))
        return write(self, jobs)

    GroupCommit._write = counting  # observe the batches the real writer commits
    try:
        async def main():
            identities = [f"id{i % 50}" for i in range(200)]  # each identity asked for 4 times
            return await asyncio.gather(*(ensure_user(sqlite_db, service=svc, identity=i) for i in identities))

        results = asyncio.run(main())
    finally:
        GroupCommit._write = write
    by_identity: dict[str, set[str]] = {}
    for user, _ in results:
        by_identity.setdefault(user["identity"], set()).add(user["sid"])
    assert len(by_identity) == 50 and all(len(sids) == 1 for sids in by_identity.values())
    assert sum(created for _, created in results) == 50
    count = sqlite_db.call(lambda conn: conn.execute(select(func.count()).select_from(users)).scalar())
    assert count == 50
    assert len(batches) < 50, batches  # far fewer commits than new users


def test_a_refused_job_does_not_fail_its_batch(sqlite_db: Database) -> None:
    acc = sqlite_db.call(lambda conn: create_account(conn))
    svc = sqlite_db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))

    def refuse(conn):
        raise errors.identity_taken()

    async def main():
        return await asyncio.gather(sqlite_db.write(refuse), ensure_user(sqlite_db, service=svc, identity="ok"),
                                    return_exceptions=True)

    refused, (user, created) = asyncio.run(main())
    assert isinstance(refused, errors.TwilioError) and refused.code == 50201
    assert created and user["identity"] == "ok"


def test_a_constraint_violation_fails_only_its_own_job(sqlite_db: Database) -> None:
    """SQLite aborts only the violating statement: the batch's other writes commit (presence rows
    of a user deleted a moment ago must not fail the first encounters sharing their batch)."""
    from sqlalchemy.exc import IntegrityError

    from tokensvc.store.tables import connections

    acc = sqlite_db.call(lambda conn: create_account(conn))
    svc = sqlite_db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))

    def orphan(conn, cid):  # its user does not exist: the foreign key refuses it
        conn.execute(connections.insert(), {"id": cid, "user_sid": "US" + "0" * 32, "service_sid": svc["sid"],
                                            "node": "n", "heartbeat_at": 1, "date_created": 1})

    async def main():
        return await asyncio.gather(ensure_user(sqlite_db, service=svc, identity="before"),
                                    sqlite_db.write(orphan, "CN1"),
                                    ensure_user(sqlite_db, service=svc, identity="after"), return_exceptions=True)

    before, refused, after = asyncio.run(main())
    assert isinstance(refused, IntegrityError)
    assert before[1] and after[1]
    names = sqlite_db.call(lambda conn: conn.execute(select(users.c.identity)).scalars().all())
    assert sorted(names) == ["after", "before"]


def test_a_failed_job_is_rolled_back_alone(sqlite_db: Database) -> None:
    """Whatever a job raises, its writes go and the other jobs' stay (a savepoint each)."""
    acc = sqlite_db.call(lambda conn: create_account(conn))
    svc = sqlite_db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))

    def half_then_broken(conn):
        get_or_create(conn, service=svc, identity="half")  # written, then undone with its job
        conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")

    async def main():
        return await asyncio.gather(sqlite_db.write(half_then_broken),
                                    ensure_user(sqlite_db, service=svc, identity="ok"),
                                    return_exceptions=True)

    broken, (user, created) = asyncio.run(main())
    assert isinstance(broken, Exception) and "no_such_table" in str(broken)
    assert created and user["identity"] == "ok"
    names = sqlite_db.call(lambda conn: conn.execute(select(users.c.identity)).scalars().all())
    assert names == ["ok"]


def test_a_failed_transaction_fails_every_job_in_it(sqlite_db: Database) -> None:
    def breaks_the_transaction(conn):
        conn.exec_driver_sql("ROLLBACK")  # the savepoints go with it

    async def main():
        return await asyncio.gather(sqlite_db.write(lambda conn: 1), sqlite_db.write(breaks_the_transaction),
                                    sqlite_db.write(lambda conn: 2), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, Exception) for o in outcomes), outcomes  # one transaction, rolled back


def _pg(db: Database) -> None:
    if db.apg is None:
        pytest.skip("needs PostgreSQL: run under scripts/with-postgres (sets TOKENSVC_TEST_DATABASE_URL)")


def _count_statements(apg) -> list[dict]:
    """Record the parameters of each statement the async connections send."""
    sent: list[dict] = []
    fetchall = apg.fetchall

    async def counting(sql, params):
        sent.append(params)
        return await fetchall(sql, params)

    apg.fetchall = counting
    return sent


def test_concurrent_identity_reads_share_statements_on_postgresql(db: Database) -> None:
    """PostgreSQL: concurrent reads by identity go out as a few `identity = ANY(…)` statements,
    each caller getting its own row (or None), whatever the mix of services."""
    _pg(db)
    from tokensvc.db import Batcher
    from tokensvc.store.provision import _read_batch
    from tokensvc.store.users import get_or_create

    acc = db.call(lambda conn: create_account(conn))
    one = db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="one")))
    two = db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="two")))
    sids = {}
    for svc in (one, two):
        for i in range(30):
            user, _ = db.call(lambda conn, svc=svc, i=i: get_or_create(conn, service=svc, identity=f"id-{i}"))
            sids[(svc["sid"], f"id-{i}")] = user["sid"]
    apg = db.apg
    statements = _count_statements(apg)

    async def main():
        try:
            reads = Batcher(lambda items: _read_batch(apg, items))
            wanted = [(svc["sid"], f"id-{i}") for i in range(40) for svc in (one, two)]  # 30..39 do not exist
            found = await asyncio.gather(*(reads(key) for key in wanted))

            async def broken(sql, params):
                raise RuntimeError("database gone")

            apg.fetchall = broken
            failed = await asyncio.gather(*(reads((one["sid"], "id-1")) for _ in range(5)), return_exceptions=True)
            return wanted, found, failed
        finally:
            await apg.aclose()

    wanted, found, failed = asyncio.run(main())
    for (service_sid, identity), row in zip(wanted, found, strict=True):
        if (service_sid, identity) in sids:
            assert row is not None and row["sid"] == sids[(service_sid, identity)]
            assert row["identity"] == identity and row["service_sid"] == service_sid
        else:
            assert row is None
    assert len(statements) <= 4, statements  # 80 reads: a batch per service, per lane at most
    assert sum(len(p["identities"]) for p in statements) == 80
    assert all(isinstance(f, RuntimeError) for f in failed), failed  # every read of a failed batch learns it


def test_concurrent_first_encounters_share_inserts_on_postgresql(db: Database) -> None:
    """PostgreSQL: concurrent first encounters are inserted a batch per service; each identity
    gets one user and exactly one creator, an identity created meanwhile elsewhere is found, and
    a deleted service refuses its own items (404) without failing the others'."""
    _pg(db)
    from tokensvc.store.provision import ensure_user
    from tokensvc.store.services import delete_service
    from tokensvc.store.users import get_or_create

    acc = db.call(lambda conn: create_account(conn))
    one = db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="one")))
    gone = db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="gone")))
    earlier, _ = db.call(lambda conn: get_or_create(conn, service=one, identity="earlier"))
    db.call(lambda conn: delete_service(conn, account_sid=acc.sid, sid=gone["sid"]))
    apg = db.apg
    statements = _count_statements(apg)

    async def main():
        try:
            calls = [ensure_user(db, service=one, identity=f"new-{i % 20}") for i in range(60)]  # each 3 times
            calls += [ensure_user(db, service=one, identity="earlier") for _ in range(3)]
            calls += [ensure_user(db, service=gone, identity="orphan") for _ in range(2)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await apg.aclose()

    results = asyncio.run(main())
    new, found, orphans = results[:60], results[60:63], results[63:]
    by_identity: dict[str, set[str]] = {}
    for user, _ in new:
        by_identity.setdefault(user["identity"], set()).add(user["sid"])
    assert len(by_identity) == 20 and all(len(s) == 1 for s in by_identity.values())
    assert sum(created for _, created in new) == 20  # one creator per identity
    assert all(user["sid"] == earlier["sid"] and not created for user, created in found)
    assert all(isinstance(o, errors.TwilioError) and o.code == 20404 for o in orphans), orphans
    count = db.call(lambda conn: conn.execute(select(func.count()).select_from(users)
                                              .where(users.c.service_sid == one["sid"])).scalar())
    assert count == 21
    assert len(statements) < 20, len(statements)  # far fewer statements than the 65 calls


def test_batched_first_encounters_never_deadlock_across_processes(db: Database, settings, monkeypatch) -> None:
    """Two workers (each its own connections and batches) meeting the same new identities in
    opposite orders: the batched INSERTs lock them in one order, so PostgreSQL never has to
    break a deadlock (each would stall its batch for deadlock_timeout)."""
    _pg(db)
    import psycopg

    other = Database(make_engine(settings))
    acc = db.call(lambda conn: create_account(conn))
    svc = db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))
    deadlocks = []
    execute = psycopg.AsyncConnection.execute

    async def watching(self, query, params=None, **kw):
        try:
            return await execute(self, query, params, **kw)
        except psycopg.errors.DeadlockDetected:
            deadlocks.append(query)
            raise

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", watching)

    async def main():
        try:
            for r in range(5):
                ids = [f"r{r}-{i:04d}" for i in range(200)]
                results = await asyncio.gather(*(ensure_user(db, service=svc, identity=i) for i in ids),
                                               *(ensure_user(other, service=svc, identity=i) for i in ids[::-1]))
                assert sum(created for _, created in results) == 200  # one creator each
        finally:
            await db.apg.aclose()
            await other.apg.aclose()

    try:
        asyncio.run(main())
    finally:
        other.dispose()
    assert deadlocks == []


def test_a_batcher_call_right_after_a_batch_is_served() -> None:
    """A call made as the previous batch's drain finishes gets a drain of its own (the lane must
    be free by then, not only once the finished task's callbacks have run)."""
    from tokensvc.db import Batcher

    async def run(items):
        await asyncio.sleep(0)
        return [item * 2 for item in items]

    async def calls():
        batcher = Batcher(run, lanes=1)
        return [await batcher(i) for i in range(20)]  # each call made straight after the last result

    async def main():
        return await asyncio.wait_for(calls(), 5)

    assert asyncio.run(main()) == [i * 2 for i in range(20)]
