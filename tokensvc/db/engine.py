"""The engine for the configured database (SQLite tuned for durability and secure delete), and
what SQLite's lock errors look like."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.pool import QueuePool

from ..config import Settings

# How long a statement waits for a SQLite lock another connection holds. A write waits a few
# seconds (a burst of another worker's commits, the CLI, a backup), then answers 503; a read on
# the event loop must never wait long, since every request waits with it (WAL readers are not
# blocked by a writer; this only covers a checkpoint or a WAL recovery in progress).
WRITE_BUSY_MS = 5000
READ_BUSY_MS = 50


def is_busy(exc: BaseException) -> bool:
    """Whether an error is SQLite's "database is locked"/busy (SQLITE_BUSY, SQLITE_LOCKED)."""
    orig = exc.orig if isinstance(exc, SAOperationalError) else exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    text = str(orig)
    return "locked" in text or "busy" in text


def make_engine(settings: Settings) -> Engine:
    """An engine for the configured database, with SQLite tuned for durability and secure delete."""
    url = settings.database_url
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": WRITE_BUSY_MS / 1000},
            poolclass=QueuePool,
            pool_size=4,
            max_overflow=16,
            # An error's message would otherwise carry the statement's values (identities,
            # attributes, friendly names) into the log.
            hide_parameters=True,
        )
        sync = settings.sqlite_synchronous

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL: readers never block the writer. synchronous=FULL (default): a commit is on disk
            # before the token that depends on it is returned, so neither a crash nor a power cut
            # loses a user whose token was issued. NORMAL is faster and still crash-safe for the
            # process, but may lose the last commits on power loss; it is an operator's choice.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={WRITE_BUSY_MS}")
            # Deleted users leave no PII in the file's free pages (SPEC §3).
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # No pre-ping: it is a SELECT 1 round trip on every checkout (PostgreSQL tokens ×1.49
    # without it); broken connections are recycled instead, and a request that meets one fails cleanly.
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=False, pool_recycle=300,
                         hide_parameters=True)



def sqlite_connection(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy connection on SQLite."""
    raw = conn.connection.driver_connection
    assert raw is not None  # None only once the connection is closed or invalidated
    return raw


@contextlib.contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A savepoint in conn's open transaction: what the block wrote is rolled back alone when it
    raises (and the exception goes on). SQLite: on the sqlite3 connection itself, where
    SQLAlchemy's begin_nested() costs ~10x more per use (the group commit's job, an import's
    line); elsewhere begin_nested(). A savepoint that cannot be released (the transaction itself
    broke) raises from the `with`: the caller must not take that for the block's own failure.
    GroupCommit keeps its own savepoints for that reason: there a job's failure is its caller's
    alone, the transaction's is every job's."""
    if conn.dialect.name != "sqlite":
        with conn.begin_nested():
            yield
        return
    raw = sqlite_connection(conn)
    raw.execute("SAVEPOINT sp")
    try:
        yield
    except BaseException:
        raw.execute("ROLLBACK TO sp")
        raw.execute("RELEASE sp")
        raise
    raw.execute("RELEASE sp")
