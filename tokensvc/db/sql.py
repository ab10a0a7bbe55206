"""Small helpers the store's statements share: the clock, rows by column name, INSERT … ON
CONFLICT DO NOTHING, and telling a foreign-key refusal apart."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Result, literal_column
from sqlalchemy.exc import DBAPIError, IntegrityError


def now() -> int:
    """The current time in whole epoch seconds."""
    return int(time.time())


# A row by column name is a Mapping[str, Any] here. SQLAlchemy's RowMapping also accepts Column
# objects as keys, so it is declared Mapping[str | Column..., Any], which a Mapping[str, Any]
# parameter does not take; its keys are the column names, all that this code looks up.
def first_row(result: Result[Any]) -> Mapping[str, Any] | None:
    """The first row of a result by column name, or None."""
    return cast("Mapping[str, Any] | None", result.mappings().first())


def named_rows(result: Result[Any]) -> Iterable[Mapping[str, Any]]:
    """The rows of a result by column name."""
    return cast("Iterable[Mapping[str, Any]]", result.mappings())


_INSERT_IGNORE: dict[tuple[str, str], Any] = {}  # built once per table


def insert_ignore(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when the row was inserted."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        # psycopg reports rowcount -1 for the INSERT … RETURNING id SQLAlchemy emits there, so ask
        # for a row back instead: one comes only when the insert happened (same round trip).
        stmt = _INSERT_IGNORE.get(("pg", table.name))
        if stmt is None:
            stmt = pg_insert(table).on_conflict_do_nothing().returning(literal_column("1"))
            _INSERT_IGNORE[("pg", table.name)] = stmt
        return conn.execute(stmt, values).first() is not None
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    stmt = _INSERT_IGNORE.get(("sqlite", table.name))
    if stmt is None:
        stmt = _INSERT_IGNORE[("sqlite", table.name)] = sqlite_insert(table).on_conflict_do_nothing()
    result = conn.execute(stmt, values)
    return result.rowcount == 1


def is_foreign_key_violation(exc: IntegrityError) -> bool:
    """Whether the database refused a row because its parent is gone (PostgreSQL SQLSTATE 23503,
    SQLite's "FOREIGN KEY constraint failed"): a write that lost a race with a delete."""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23503" or "FOREIGN KEY constraint failed" in str(orig)


_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class DriverSQL:
    """One statement as text for the driver itself, written once with `:name` parameters:
    sqlite3 takes those as they are, psycopg as `%(name)s`. A hot path's statements run on
    the driver's cursor (`driver_rows`), skipping SQLAlchemy's per-execution work (~30-70 µs a
    statement), inside the SQLAlchemy connection's transaction."""

    sqlite: str
    postgresql: str

    @classmethod
    def of(cls, sql: str, *, postgresql: str | None = None) -> DriverSQL:
        pg = postgresql if postgresql is not None else sql
        return cls(sql, _PARAM.sub(lambda m: f"%({m.group(1)})s", pg.replace("%", "%%")))


def driver_insert(by_dialect: Mapping[str, Any], table: Any) -> tuple[DriverSQL, dict[str, Any]]:
    """An insert built per dialect (`{"sqlite": stmt, "postgresql": stmt}`) as the drivers' own
    text (sqlite3's `:name`, psycopg's `%(name)s`), and the values of the `table`'s column
    defaults it binds (what SQLAlchemy's execution would fill in)."""
    from sqlalchemy.dialects import postgresql, sqlite

    lite = by_dialect["sqlite"].compile(dialect=sqlite.dialect(paramstyle="named"))
    pg = by_dialect["postgresql"].compile(dialect=postgresql.psycopg.dialect())
    defaults: dict[str, Any] = {}
    for key in lite.params:
        default = table.c[key].default if key in table.c else None
        if default is not None:
            assert default.is_scalar, f"{table.name}.{key}: a driver's insert renders scalar column defaults only"
            defaults[key] = default.arg
    return DriverSQL(str(lite), str(pg)), defaults


def driver_rows(conn: Connection, stmt: DriverSQL, params: Mapping[str, Any] | Sequence[Any],
                booleans: frozenset[str] = frozenset()) -> tuple[list[dict[str, Any]], int]:
    """(rows by column name, rowcount) of one statement on the driver's cursor. A driver error
    is raised as SQLAlchemy's (IntegrityError, OperationalError, … with `.orig`), as
    conn.execute would raise it, so callers and the deadlock retry tell them apart as usual.
    `booleans`: result columns SQLite gives as 0/1. `params` by name (`:name`), or in order for
    a statement written with `?` for sqlite3 and `%s` for psycopg."""
    raw = conn.connection.driver_connection
    assert raw is not None  # None only once the connection is closed or invalidated
    sqlite = conn.dialect.name == "sqlite"
    sql = stmt.sqlite if sqlite else stmt.postgresql
    cur = raw.cursor()
    try:
        try:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description is not None else []
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error,
                                      hide_parameters=True, dialect=conn.dialect) from None
        names = [d[0] for d in cur.description] if cur.description is not None else []
        found = [dict(zip(names, row, strict=True)) for row in rows]
        if sqlite and booleans:
            for row in found:
                for name in booleans:
                    if row.get(name) is not None:
                        row[name] = bool(row[name])
        return found, cur.rowcount
    finally:
        cur.close()
