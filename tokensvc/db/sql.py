"""Small helpers the store's statements share: the clock, rows by column name, INSERT … ON
CONFLICT DO NOTHING, and telling a foreign-key refusal apart."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import Connection, Result, literal_column
from sqlalchemy.exc import IntegrityError


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
