"""store/users.list_users with UserFilters (SPEC §11) on the configured database (a SQLite file,
or PostgreSQL under scripts/with-postgres): the prefix range is exact for every Unicode prefix,
each filter pages by keyset in its order, and each is one index range (EXPLAIN, both databases).
PostgreSQL: the identity column is byte-ordered ("C") even in a database created with an ICU
locale, where the default collation would put "A" and "á" inside the range of the prefix "a".
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, create_engine, event, select, text, update
from sqlalchemy.engine import make_url

from fresh_db import PG_URL, needs_postgres
from tokensvc.config import Settings
from tokensvc.crypto import SecretBox
from tokensvc.db import Database, make_engine
from tokensvc.paging import IDENTITY, ROW_ID, UPDATED, Cursors, Page, PageRequest
from tokensvc.sids import new_sid
from tokensvc.store.accounts import create_account
from tokensvc.store.roles import create_role
from tokensvc.store.schema import ensure_schema
from tokensvc.store.services import create_service
from tokensvc.store.tables import users
from tokensvc.store.user_filters import UserFilters, list_users, page_key, prefix_end
from tokensvc.store.users import insert_many

# Identities whose order differs between code points and a locale's collation, LIKE wildcards,
# case, combining and precomposed accents, astral characters and the last code point.
TRICKY = ["a", "A", "Ab", "ab", "abc", "a%", "a%b", "a_b", "aXb", "a\\b", "B", "b", "á", "a\u0301", "é", "e",
          "😀", "😀x", "😁", "\U0010ffff", "\U0010ffffz", "z\U0010ffff", "\ud7ff", "\ue000", "日本", "日本語", "_", "%"]


# ---------------------------------------------------------------- the prefix's end, by itself

@given(st.text(min_size=1, max_size=6), st.text(max_size=8))
def test_the_prefix_range_is_exactly_startswith(prefix: str, rest: str) -> None:
    # Code point order is what SQLite's BINARY and PostgreSQL's "C" give UTF-8 text.
    end = prefix_end(prefix)
    for s in (prefix + rest, rest, rest + prefix, prefix[:-1] + rest):  # st.text() holds no surrogate
        inside = prefix <= s and (end is None or s < end)
        assert inside == s.startswith(prefix), (prefix, s, end)


@pytest.mark.parametrize(("prefix", "end"), [
    ("a", "b"), ("a%", "a&"), ("az", "a{"), ("\ud7ff", "\ue000"), ("x\U0010ffff", "y"),
    ("\U0010ffff\U0010ffff", None), ("😀", "😁"),
])
def test_the_prefix_end_skips_surrogates_and_carries_the_last_code_point(prefix: str, end: str | None) -> None:
    assert prefix_end(prefix) == end


# ---------------------------------------------------------------- on the database

def _service(db: Database) -> dict[str, Any]:
    acc = db.call(lambda conn: create_account(conn))
    return db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))


def _all(db: Database, service_sid: str, filters: UserFilters, size: int = 3) -> list[Any]:
    """Every row of the filtered list, following the next cursors page by page."""
    cursors = Cursors(SecretBox(b"k" * 32), "/users", filters.order)
    rows: list[Any] = []
    req = PageRequest(size, 0, None)
    for _ in range(1000):
        page: Page = db.call(lambda conn, r=req: list_users(conn, service_sid=service_sid, req=r, filters=filters))
        rows += page.rows
        if not page.has_next:
            return rows
        token = cursors.encode("n", page_key(page.rows[-1], filters.order))
        direction, key = cursors.decode(token)
        req = PageRequest(size, req.page + 1, token, after=key)
    raise AssertionError("the list did not end")


def test_identity_prefix_pages_exactly_the_identities_that_start_with_it(db: Database) -> None:
    svc = _service(db)
    db.call(lambda conn: insert_many(conn, svc, TRICKY))
    prefixes = sorted({i[:n] for i in TRICKY for n in range(1, len(i) + 1)} | {"a\\", "x", "\ud7ff", "\U0010ffff"})
    for prefix in prefixes:
        got = [r.identity for r in _all(db, svc["sid"], UserFilters(identity_prefix=prefix))]
        assert got == sorted(i for i in TRICKY if i.startswith(prefix)), prefix  # code point order


def test_filters_combine_with_and(db: Database) -> None:
    svc = _service(db)
    made = db.call(lambda conn: insert_many(conn, svc, ["ann", "anna", "bob", "annie"]))
    mod = db.call(lambda conn: create_role(conn, service=svc,
                                           friendly_name="mod", type="deployment", permissions=[]))
    db.call(lambda conn: conn.execute(update(users).where(users.c.sid.in_([made["anna"]["sid"], made["bob"]["sid"]]))
                                      .values(role_sid=mod["sid"], date_updated=made["anna"]["date_updated"] + 5)))
    both = UserFilters(identity_prefix="ann", role_sid=mod["sid"])
    assert [r.identity for r in _all(db, svc["sid"], both)] == ["anna"]
    exact = UserFilters(identities=("bob", "annie", "nobody"), role_sid=svc["default_service_role_sid"])
    assert [r.identity for r in _all(db, svc["sid"], exact)] == ["annie"]
    later = UserFilters(updated_after=made["ann"]["date_updated"], identity_prefix="b")
    assert [r.identity for r in _all(db, svc["sid"], later)] == ["bob"]


def test_updated_after_pages_through_ties_in_sid_order(db: Database) -> None:
    svc = _service(db)
    made = db.call(lambda conn: insert_many(conn, svc, [f"u{i}" for i in range(11)]))
    t0 = 1_800_000_000
    dates = {f"u{i}": t0 + (i % 3) for i in range(11)}  # three dates, many users on each
    for identity, date in dates.items():
        db.call(lambda conn, i=identity, d=date: conn.execute(
            update(users).where(users.c.sid == made[i]["sid"]).values(date_updated=d)))
    rows = _all(db, svc["sid"], UserFilters(updated_after=t0), size=2)  # t0 itself is not after t0
    expected = sorted(((d, made[i]["sid"]) for i, d in dates.items() if d > t0))
    assert [(r.date_updated, r.sid) for r in rows] == expected


@pytest.fixture
def crowd(db: Database) -> Iterator[dict[str, Any]]:
    """A service of 3,000 users (a role, dates and identities spread) so the planner has a table
    to choose over, as at 1M: EXPLAIN must show the index it ranges over."""
    svc = _service(db)
    mod = db.call(lambda conn: create_role(conn, service=svc,
                                           friendly_name="mod", type="deployment", permissions=[]))
    rows = [{"sid": new_sid("US"), "account_sid": svc["account_sid"], "service_sid": svc["sid"],
             "role_sid": mod["sid"] if n % 100 == 0 else svc["default_service_role_sid"],
             "identity": f"user{n:05d}@example.com", "joined_channels_count": 0, "was_online": False,
             "date_created": 1_700_000_000 + n, "date_updated": 1_700_000_000 + n // 7} for n in range(3000)]
    db.call(lambda conn: conn.execute(users.insert(), rows))
    db.call(lambda conn: conn.exec_driver_sql("ANALYZE users" if conn.dialect.name == "postgresql" else "ANALYZE"))
    stored = db.call(lambda conn: [dict(r._mapping) for r in conn.execute(
        select(users).where(users.c.service_sid == svc["sid"]).order_by(users.c.id))])
    yield {"service": svc, "role": mod, "rows": stored}


def _statements(db: Database, fn: Any) -> list[tuple[str, Any]]:
    """The SQL list_users runs (and its parameters), captured from the driver."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        db.call(fn)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    return seen


def _plan(db: Database, filters: UserFilters, service_sid: str, req: PageRequest, *, ordered: bool) -> str:
    (statement, params), = _statements(db, lambda conn: list_users(conn, service_sid=service_sid, req=req,
                                                                   filters=filters))

    def explain(conn: Connection) -> str:
        if conn.dialect.name == "sqlite":
            return "\n".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
        # The suite's database is small and shared: between a page-sized plan and a bitmap scan plus
        # a sort of a few rows, PostgreSQL's pick follows the statistics of the day. Without those
        # two it must show what the index gives: the range and the order (a Sort stays possible,
        # only dearer, so one still shows up when the index cannot order). bench/admin.py shows
        # the pick at 1M users.
        if ordered:
            conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            conn.exec_driver_sql("SET LOCAL enable_sort = off")
        return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params))

    return db.call(explain)


def _cases(crowd: dict[str, Any]) -> list[tuple[str, UserFilters, PageRequest, str, str, tuple[str, ...]]]:
    """(name, filters, page, the index, SQLite's range on it, PostgreSQL's Index Cond parts) for
    every filter, first pages and pages after and before a cursor."""
    mid = crowd["rows"][1500]
    updated = (mid["date_updated"], mid["sid"])
    return [
        ("prefix", UserFilters(identity_prefix="user01"), PageRequest(50, 0, None), "uq_users_service_identity",
         "service_sid=? AND identity>? AND identity<?",
         ("(identity)::text >= 'user01'", "(identity)::text < 'user02'")),
        ("prefix after", UserFilters(identity_prefix="user01"), PageRequest(50, 1, "t", after="user01500"),
         "uq_users_service_identity", "service_sid=? AND identity>? AND identity<?",
         ("(identity)::text > 'user01500'", "(identity)::text < 'user02'")),
        ("prefix before", UserFilters(identity_prefix="user01"), PageRequest(50, 1, "t", before="user01500"),
         "uq_users_service_identity", "service_sid=? AND identity>? AND identity<?",
         ("(identity)::text >= 'user01'", "(identity)::text < 'user01500'")),
        ("role", UserFilters(role_sid=crowd["role"]["sid"]), PageRequest(50, 1, "t", after=mid["id"]),
         "ix_users_role_id", "role_sid=? AND id>?", ("(role_sid)::text = 'RL", f"(id > {mid['id']})")),
        ("updated", UserFilters(updated_after=1_700_000_100), PageRequest(50, 0, None), "ix_users_service_updated",
         "service_sid=? AND date_updated>?", ("date_updated > '1700000100'",)),
        ("updated after", UserFilters(updated_after=1_700_000_100), PageRequest(50, 1, "t", after=updated),
         "ix_users_service_updated", "service_sid=? AND (date_updated,sid)>(?,?)",
         ("ROW(date_updated, (sid)::text) > ROW(",)),
        ("updated before", UserFilters(updated_after=1_700_000_100), PageRequest(50, 1, "t", before=updated),
         "ix_users_service_updated", "service_sid=? AND date_updated>? AND (date_updated,sid)<(?,?)",
         ("date_updated > '1700000100'", "ROW(date_updated, (sid)::text) < ROW(")),
        ("identities", UserFilters(identities=("user00001@example.com", "user02000@example.com")),
         PageRequest(50, 0, None), "uq_users_service_identity", "service_sid=? AND identity=?",
         ("(identity)::text = ANY",)),
    ]


def _sqlite_name(db: Database, index: str) -> str:
    """SQLite names a UNIQUE constraint's index itself (sqlite_autoindex_users_N): the one on its columns."""
    if index != "uq_users_service_identity":
        return index

    def find(conn: Connection) -> str:
        for row in conn.exec_driver_sql("PRAGMA index_list(users)"):
            columns = [c[2] for c in conn.exec_driver_sql(f"PRAGMA index_info('{row[1]}')")]
            if columns == ["service_sid", "identity"]:
                return str(row[1])
        raise AssertionError("no index on (service_sid, identity)")

    return db.call(find)


def test_each_filter_is_one_index_range_without_a_sort(db: Database, crowd: dict[str, Any]) -> None:
    service_sid = crowd["service"]["sid"]
    for name, filters, req, index, sqlite_range, pg_conds in _cases(crowd):
        # A few exact identities are equality lookups, their rows then sorted by id: no range needed.
        sorted_ok = name == "identities"
        plan = _plan(db, filters, service_sid, req, ordered=not sorted_ok)
        if db.engine.dialect.name == "sqlite":
            # e.g. SEARCH users USING INDEX ix (service_sid=? AND identity>? AND identity<?)
            assert f"SEARCH users USING INDEX {_sqlite_name(db, index)} ({sqlite_range})" in plan, (name, plan)
            assert sorted_ok or "TEMP B-TREE" not in plan, (name, plan)  # the index gives the order
        else:
            lines = plan.splitlines()
            scan = next(i for i, line in enumerate(lines) if "Index Scan" in line)
            assert f"using {index} on users" in lines[scan], (name, plan)
            cond = lines[scan + 1]
            assert "Index Cond:" in cond and all(part in cond for part in pg_conds), (name, plan)
            # Every condition bounds the range; but a role's rows are checked against the service
            # too (always true: a role belongs to one service, so the index need not hold it).
            filters_ = [line for line in lines if "Filter:" in line]
            assert filters_ == [] or (name == "role" and len(filters_) == 1 and "(service_sid)::text =" in filters_[0]
                                      and " AND " not in filters_[0]), (name, plan)
            assert sorted_ok or "Sort" not in plan, (name, plan)


def test_the_explained_statements_page_right(db: Database, crowd: dict[str, Any]) -> None:
    # The same statements the plans were read from answer what the filters mean.
    service_sid = crowd["service"]["sid"]
    rows = crowd["rows"]
    got = _all(db, service_sid, UserFilters(identity_prefix="user01"), size=50)
    assert [r.identity for r in got] == [r["identity"] for r in rows if r["identity"].startswith("user01")]
    got = _all(db, service_sid, UserFilters(role_sid=crowd["role"]["sid"]), size=40)
    assert [r.sid for r in got] == [r["sid"] for r in rows if r["role_sid"] == crowd["role"]["sid"]]
    got = _all(db, service_sid, UserFilters(updated_after=1_700_000_400), size=45)
    assert [r.sid for r in got] == [r["sid"] for r in sorted(rows, key=lambda r: (r["date_updated"], r["sid"]))
                                    if r["date_updated"] > 1_700_000_400]


# ---------------------------------------------------------------- PostgreSQL's collation

@needs_postgres
def test_postgresql_identity_column_is_byte_ordered(db: Database) -> None:
    collation = db.call(lambda conn: conn.execute(text(
        "SELECT collation_name FROM information_schema.columns WHERE table_name = 'users' "
        "AND column_name = 'identity' AND table_schema = current_schema()")).scalar())
    assert collation == "C"


@needs_postgres
def test_identity_prefix_is_exact_in_a_database_with_an_icu_locale(tmp_path: Path) -> None:
    assert PG_URL is not None
    name = "tokensvc_icu_" + new_sid("XX")[2:14]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url, keys_dir=tmp_path / "keys")
    try:
        ensure_schema(settings)
        db = Database(make_engine(settings))
        try:
            # The database's own order is the one that would break a prefix range: a < A < b, a < á < b.
            assert db.call(lambda conn: conn.exec_driver_sql("SELECT 'a' < 'A' AND 'A' < 'b' AND 'á' < 'b'").scalar())
            svc = _service(db)
            db.call(lambda conn: insert_many(conn, svc, TRICKY))
            for prefix in ("a", "A", "a%", "á", "😀", "\U0010ffff", "日本"):
                got = [r.identity for r in _all(db, svc["sid"], UserFilters(identity_prefix=prefix))]
                assert got == sorted(i for i in TRICKY if i.startswith(prefix)), prefix
            ordered = db.call(lambda conn: [r[0] for r in conn.execute(
                select(users.c.identity).where(users.c.service_sid == svc["sid"]).order_by(users.c.identity))])
            assert ordered == sorted(TRICKY)
        finally:
            db.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_cursor_kinds_do_not_open_each_other() -> None:
    box = SecretBox(b"k" * 32)
    kinds = {kind: Cursors(box, "/users", kind) for kind in (ROW_ID, IDENTITY, UPDATED)}
    keys: dict[str, Any] = {ROW_ID: 7, IDENTITY: "日本 a%_\U0010ffff" * 40, UPDATED: (1_800_000_000, new_sid("US"))}
    for (kind, cursors), (other, other_cursors) in itertools.product(kinds.items(), repeat=2):
        token = cursors.encode("n", keys[kind])
        if kind == other:
            assert other_cursors.decode(token) == ("n", keys[kind])
        else:
            with pytest.raises(Exception) as refused:
                other_cursors.decode(token)
            assert getattr(refused.value, "code", None) == 21481
