"""Database access: the engine (`engine`), SQLite's group commit (`group_commit`), PostgreSQL's
batcher and async pool (`batcher`, `postgres`), the `Database` facade request handlers use
(`database`), the one rule for resolving a batch's futures (`futures`), and the statement
helpers the store shares (`sql`). What callers use is importable from here."""

from .batcher import Batcher
from .database import Database
from .engine import READ_BUSY_MS, WRITE_BUSY_MS, is_busy, make_engine, savepoint, sqlite_connection
from .futures import abandon, resolve, settle
from .group_commit import GroupCommit
from .postgres import AsyncPostgres
from .sql import (
    DriverSQL,
    driver_insert,
    driver_rows,
    first_row,
    insert_ignore,
    is_foreign_key_violation,
    named_rows,
    now,
)

__all__ = [
    "READ_BUSY_MS", "WRITE_BUSY_MS", "AsyncPostgres", "Batcher", "Database", "DriverSQL", "GroupCommit", "abandon",
    "driver_insert", "driver_rows", "first_row", "insert_ignore", "is_busy", "is_foreign_key_violation",
    "make_engine", "named_rows", "now", "resolve", "savepoint", "settle", "sqlite_connection",
]
