"""The one way request handlers reach the database.

SQLite reads here are indexed and sub-millisecond, so `Database.read` runs them inline on the
event loop (bench/tokens.py shows that beats a threadpool hop), on a connection that cannot
write and waits at most READ_BUSY_MS for a lock. Everything else (`run`, `write`,
`checkpoint`) may wait for SQLite's write lock, which another process (a second worker, the
CLI, a backup) can hold for seconds: it runs on a worker thread, waits at most WRITE_BUSY_MS,
and then fails as 503 20503 (`errors.database_busy`). Any network database goes through the
threadpool so a slow query never stalls other requests.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError as SAOperationalError

from .. import errors
from .engine import READ_BUSY_MS, is_busy, sqlite_connection
from .group_commit import GroupCommit
from .postgres import AsyncPostgres

T = TypeVar("T")

log = logging.getLogger("tokensvc")


class Database:
    """The engine plus `read`, `run` and `write`, each one transaction, on or off the loop."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._reader: Connection | None = None  # SQLite, used only on the event loop's thread
        self._group = GroupCommit(engine) if self.is_sqlite else None
        self.apg = (AsyncPostgres(engine.url.render_as_string(hide_password=False))
                    if engine.dialect.name == "postgresql" else None)

    async def write(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run a small write job fn(conn, *args): on SQLite group-committed with concurrent ones
        off the loop (its fsync too), elsewhere like `run` (PostgreSQL commits concurrent
        transactions in parallel anyway). On SQLite a job that raises is rolled back alone
        (GroupCommit)."""
        if self._group is not None:
            try:
                return await self._group.submit((lambda conn: fn(conn, *args)) if args else fn)
            except (SAOperationalError, sqlite3.OperationalError) as exc:
                if is_busy(exc):
                    raise errors.database_busy() from None
                raise
        return await self.run(fn, *args)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, ...) in one transaction, synchronously."""
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, ...) in one transaction that may write, never blocking the loop. SQLite:
        in the group commit (one writer thread, BEGIN IMMEDIATE, so what fn reads is still true
        when it writes), 503 20503 after WRITE_BUSY_MS behind another process's lock."""
        if self._group is not None:
            return await self.write((lambda conn: fn(conn, *args, **kwargs)) if args or kwargs else fn)
        return await anyio.to_thread.run_sync(lambda: self.call(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, ...), which only reads. SQLite: inline on the loop (a hot path's indexed
        read costs less than a thread hop), on one connection kept for the loop that refuses
        writes (`query_only`) and waits at most READ_BUSY_MS for a lock (503 20503 then)."""
        if not self.is_sqlite:
            return await self.run(fn, *args, **kwargs)
        try:
            # One connection kept for the loop: a pool checkout/return per request costs ~12 µs.
            conn = self._reader
            if conn is None or conn.closed or conn.invalidated:
                conn = self._reader = self._open_reader()
            with conn.begin():
                return fn(conn, *args, **kwargs)
        except (SAOperationalError, sqlite3.OperationalError) as exc:
            if is_busy(exc):
                raise errors.database_busy() from None
            raise

    async def scan(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, ...), which only reads but may visit many rows it does not return (a list
        whose filters share no index): never on the loop. SQLite: a pooled connection on a worker
        thread, in a read transaction; elsewhere as `run`."""
        if not self.is_sqlite:
            return await self.run(fn, *args, **kwargs)
        try:
            return await anyio.to_thread.run_sync(lambda: self.call(fn, *args, **kwargs))
        except (SAOperationalError, sqlite3.OperationalError) as exc:
            if is_busy(exc):
                raise errors.database_busy() from None
            raise

    def _open_reader(self) -> Connection:
        conn = self.engine.connect()
        raw = sqlite_connection(conn)
        raw.execute("PRAGMA query_only=ON")
        raw.execute(f"PRAGMA busy_timeout={READ_BUSY_MS}")
        return conn

    async def checkpoint(self) -> None:
        """Fold the SQLite WAL into the main file and empty it, so deleted data leaves no copy.
        Off the loop: TRUNCATE waits for the write lock, which another process may hold. If it
        stays held, the data already deleted is left in the WAL until the next checkpoint."""
        if self.is_sqlite:
            busy = await anyio.to_thread.run_sync(self._checkpoint)
            if busy:
                log.warning("WAL checkpoint skipped: the database stayed locked by another connection; "
                            "the next checkpoint folds the WAL")

    def _checkpoint(self) -> bool:
        try:
            with self.engine.connect() as conn:
                row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
                return bool(row and row[0])
        except SAOperationalError as exc:
            if is_busy(exc):
                return True
            raise

    async def aclose(self) -> None:
        """Close what lives on the event loop (before the loop goes away)."""
        if self.apg is not None:
            await self.apg.aclose()

    def dispose(self) -> None:
        if self._reader is not None:
            # Not back to the pool: it is read-only, and a writer would get it next.
            self._reader.invalidate()
            self._reader.close()
            self._reader = None
        self.engine.dispose()
