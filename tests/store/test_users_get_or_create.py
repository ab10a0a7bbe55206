"""store/users.py's one get-or-create, tested directly on the configured database (SQLite, or
PostgreSQL under scripts/with-postgres): get_many, insert_many, get_or_create, and their races;
and store/provision.py's async path on PostgreSQL, which must give the same rows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import race
from tokensvc import errors
from tokensvc.db import Database
from tokensvc.store import provision
from tokensvc.store.accounts import create_account
from tokensvc.store.services import create_service, delete_service
from tokensvc.store.tables import users
from tokensvc.store.users import get_many, get_or_create, get_or_create_many, insert_many, settle


def _service(db: Database) -> dict[str, Any]:
    acc = db.call(lambda conn: create_account(conn))
    return db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))


def _count(db: Database, service_sid: str) -> int:
    return db.call(lambda conn: conn.execute(select(func.count()).select_from(users)
                                             .where(users.c.service_sid == service_sid)).scalar())


def test_insert_many_gives_every_column_its_table_default_and_the_service_default_role(db: Database) -> None:
    svc = _service(db)
    made = db.call(lambda conn: insert_many(conn, svc, ["b", "a"]))
    assert sorted(made) == ["a", "b"]
    for identity, row in made.items():
        assert row["identity"] == identity and row["sid"].startswith("US") and row["id"] is not None
        assert row["role_sid"] == svc["default_service_role_sid"]
        assert row["account_sid"] == svc["account_sid"] and row["service_sid"] == svc["sid"]
        assert row["joined_channels_count"] == 0 and row["was_online"] is False
        assert row["attributes"] is None and row["friendly_name"] is None
        assert row["date_created"] == row["date_updated"]
    found = db.call(lambda conn: get_many(conn, svc["sid"], ["a", "b", "nobody"]))
    assert {i: dict(r) for i, r in found.items()} == made  # RETURNING gave the row as stored


def test_insert_many_skips_taken_identities(db: Database) -> None:
    svc = _service(db)
    first = db.call(lambda conn: insert_many(conn, svc, ["taken"]))
    again = db.call(lambda conn: insert_many(conn, svc, ["taken", "fresh"]))
    assert list(again) == ["fresh"]
    assert db.call(lambda conn: get_many(conn, svc["sid"], ["taken"]))["taken"]["sid"] == first["taken"]["sid"]


def test_insert_many_of_a_deleted_service_inserts_nothing(db: Database) -> None:
    svc = _service(db)
    db.call(lambda conn: delete_service(conn, account_sid=svc["account_sid"], sid=svc["sid"]))
    assert db.call(lambda conn: insert_many(conn, svc, ["orphan"])) == {}
    with pytest.raises(errors.TwilioError) as refused:
        db.call(lambda conn: get_or_create(conn, svc, "orphan"))
    assert refused.value.status == 404


def test_get_many_reads_many_identities(db: Database) -> None:
    svc = _service(db)
    ids = [f"id-{i:04d}" for i in range(1200)]  # more than one SQLite IN list
    db.call(lambda conn: insert_many(conn, svc, ids))
    found = db.call(lambda conn: get_many(conn, svc["sid"], ids + ["missing"]))
    assert sorted(found) == ids


def test_get_or_create_creates_once_then_finds(db: Database) -> None:
    svc = _service(db)
    user, created = db.call(lambda conn: get_or_create(conn, svc, "alice"))
    again, created_again = db.call(lambda conn: get_or_create(conn, svc, "alice"))
    assert created and not created_again and again["sid"] == user["sid"]


def test_get_or_create_inside_a_larger_transaction_is_undone_with_it(db: Database) -> None:
    """Usable in any write transaction (a Member's creation next): it commits or rolls back with it."""
    svc = _service(db)

    def provision_then_fail(conn: Any) -> None:
        get_or_create(conn, svc, "undone")
        raise RuntimeError("the rest of the transaction failed")

    with pytest.raises(RuntimeError):
        db.call(provision_then_fail)
    assert db.call(lambda conn: get_many(conn, svc["sid"], ["undone"])) == {}


def test_get_or_create_many_mixes_found_and_new(db: Database) -> None:
    svc = _service(db)
    old, _ = db.call(lambda conn: get_or_create(conn, svc, "old"))
    outcomes = db.call(lambda conn: get_or_create_many(conn, svc, ["new", "old", "new"]))
    assert outcomes["old"] == (old, False)
    assert outcomes["new"][1] is True and outcomes["new"][0]["identity"] == "new"


def test_concurrent_first_encounters_of_one_identity_yield_one_user(db: Database) -> None:
    svc = _service(db)
    results = race(12, lambda: db.call(lambda conn: get_or_create(conn, svc, "crowd")))
    assert all(isinstance(r, tuple) for r in results), results
    assert len({user["sid"] for user, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert _count(db, svc["sid"]) == 1


def test_settle_decides_every_outcome() -> None:
    made, winner = {"a": {"sid": "USa"}}, {"b": {"sid": "USb"}}
    outcomes = settle(["a", "b", "c"], made, winner, service_exists=True)
    assert outcomes["a"] == (made["a"], True) and outcomes["b"] == (winner["b"], False)
    assert isinstance(outcomes["c"], errors.TwilioError) and outcomes["c"].code == 50201  # created and deleted
    gone = settle(["a", "c"], made, {}, service_exists=False)
    assert all(isinstance(o, errors.TwilioError) and o.status == 404 for o in gone.values())


def test_the_async_postgresql_path_gives_the_rows_the_sync_path_gives(db: Database) -> None:
    if db.apg is None:
        pytest.skip("needs PostgreSQL: run under scripts/with-postgres (sets TOKENSVC_TEST_DATABASE_URL)")
    svc = _service(db)
    sync = db.call(lambda conn: insert_many(conn, svc, ["sync"]))["sync"]

    async def main() -> Any:
        try:
            made = await provision.insert_many(db.apg, svc, ["async", "sync"])
            found = await provision.get_many(db.apg, svc["sid"], ["async", "sync", "nobody"])
            return made, found
        finally:
            await db.apg.aclose()

    made, found = asyncio.run(main())
    assert list(made) == ["async"] and sorted(found) == ["async", "sync"]
    assert set(made["async"]) == set(sync)  # the same columns
    assert dict(found["sync"]) == dict(sync) and dict(found["async"]) == made["async"]
    assert made["async"]["was_online"] is False and made["async"]["joined_channels_count"] == 0
    assert made["async"]["role_sid"] == svc["default_service_role_sid"]
