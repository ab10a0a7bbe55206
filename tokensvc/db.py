"""Engine creation and the one way request handlers reach the database.

SQLite reads here are indexed and sub-millisecond, so `Database.read` runs them inline on the
event loop (bench/tokens.py shows that beats a threadpool hop), on a connection that cannot
write and waits at most READ_BUSY_MS for a lock. Everything else (`run`, `write`,
`checkpoint`) may wait for SQLite's write lock, which another process (a second worker, the
CLI, a backup) can hold for seconds: it runs on a worker thread, waits at most WRITE_BUSY_MS,
and then fails as 503 20503 (`errors.database_busy`). Any network database goes through the
threadpool so a slow query never stalls other requests.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast

import anyio.to_thread
from psycopg import OperationalError
from sqlalchemy import Connection, Engine, Result, create_engine, event, literal_column
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.pool import QueuePool

from . import errors
from .config import Settings

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("tokensvc")

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


def now() -> int:
    """The current time in whole epoch seconds."""
    return int(time.time())


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


class GroupCommit:
    """SQLite writes that may come in bursts (first encounters, presence): jobs queued while one
    batch is being written share the next transaction, so N new users cost one fsync instead of
    N, and the fsync happens on a worker thread instead of stalling the event loop. Each job runs
    in a savepoint: one that raises is rolled back alone and its caller gets the exception; the
    others commit (unless the transaction itself broke: then every job fails). Each caller gets its own job's result
    once the transaction holding it has committed; a job whose caller went away is not run."""

    MAX_BATCH = 256

    def __init__(self, engine: Engine):
        self.engine = engine
        self._pending: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._draining = False

    async def submit(self, fn: Callable[[Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.MAX_BATCH]
                del self._pending[: self.MAX_BATCH]
                batch = [(fn, future) for fn, future in batch if not future.done()]  # callers gone: skip
                if not batch:
                    continue
                try:
                    outcomes = await anyio.to_thread.run_sync(self._write, [fn for fn, _ in batch])
                except BaseException as exc:  # the whole transaction failed: every job learns it
                    outcomes = [(False, exc)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._draining = False

    def _write(self, jobs: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.engine.begin() as conn:
            # IMMEDIATE: the write lock from the start, so what a job reads is still true when it
            # writes (pysqlite would otherwise begin only at the first write, after the reads).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            # Savepoints on the sqlite3 connection itself: SQLAlchemy's begin_nested() costs
            # ~10x more per job, on the first-encounter path. (sqlite3 begins implicitly only
            # before DML, and the transaction is already open.)
            raw = sqlite_connection(conn)
            for job in jobs:
                raw.execute("SAVEPOINT job")  # a failed job leaves nothing behind
                try:
                    result = job(conn)
                except Exception as exc:  # the job's own failure (if the savepoint is gone, everyone's)
                    raw.execute("ROLLBACK TO job")
                    raw.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    raw.execute("RELEASE job")
                    outcomes.append((True, result))
        return outcomes


class Batcher(Generic[T, R]):
    """Concurrent calls of one kind of statement, sent together: `run(items)` executes a batch
    and returns each item's result (or the exception to raise for it), in order.

    For PostgreSQL, which every replica shares: a statement is a round trip that costs the
    server (and psycopg) far more than the row work inside it. Calls that arrive while `lanes`
    batches are in flight wait for the next batch, which takes all of them (up to `max_batch`).
    There is no timer: a call that finds a lane free goes at once, so a quiet server answers as
    fast as with one statement per call, and a busy one sends a fraction of the statements."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[Any]]], *, lanes: int = 2, max_batch: int = 256):
        self.run = run
        self.lanes = lanes
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drains: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, a restarted app): start afresh
            self._loop, self._pending, self._drains = loop, [], set()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._drains) < self.lanes:
            task = loop.create_task(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)  # a task cancelled before it ever ran
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = [(item, future) for item, future in self._pending[: self.max_batch]
                         if not future.done()]  # callers gone (cancelled): not run
                del self._pending[: self.max_batch]
                if not batch:
                    continue
                try:
                    results = await self.run([item for item, _ in batch])
                except Exception as exc:  # every call of the batch learns it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller went away meanwhile
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            # Free the lane now: a done callback runs a turn later, and a call made in between
            # (by a caller this batch just woke) would find no lane and no drain to serve it.
            self._drains.discard(asyncio.current_task())
            for _, future in batch:  # cancelled mid-batch (shutdown): nobody waits forever
                if not future.done():
                    future.cancel()


_PG_IDLE = 0  # libpq PQTRANS_IDLE: no statement in flight, no transaction open


class AsyncPostgres:
    """A few psycopg AsyncConnections in autocommit, used on the event loop for the token hot
    path's statements (each atomic on its own: the read, and INSERT … ON CONFLICT DO NOTHING).
    A threadpool hop plus SQLAlchemy's sync path cost ~600 µs of CPU per request there; this
    costs what the driver costs (measured with bench/tokens.py --database postgresql).
    Connections open lazily on the loop that uses them and close with the app's lifespan."""

    def __init__(self, url: str, size: int = 8):
        from sqlalchemy.engine import make_url

        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.size = size
        self._idle: list[Any] = []
        self._open = 0
        self._waiters: asyncio.Queue[Any] | None = None
        self.batchers: dict[str, Batcher[Any, Any]] = {}  # callers' batchers by kind, for this loop

    async def _acquire(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        while True:
            if self._idle:
                return self._idle.pop()
            if self._open < self.size:
                self._open += 1
                try:
                    return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, row_factory=dict_row)
                except BaseException:
                    self._open -= 1
                    raise
            if self._waiters is None:
                self._waiters = asyncio.Queue()
            conn = await self._waiters.get()
            if conn is not None:
                return conn
            # None: a connection was dropped, so there is room to open one (next turn)

    def _release(self, conn: Any) -> None:
        if not conn.closed and conn.pgconn.transaction_status != _PG_IDLE:
            # cancelled mid-statement: its state is unknown, so it is not reused
            asyncio.get_running_loop().create_task(conn.close())
            self._drop()
        elif conn.closed:
            self._drop()
        elif self._waiters is not None and self._waiters._getters:  # type: ignore[attr-defined]  # Queue's waiting get()s
            self._waiters.put_nowait(conn)
        else:
            self._idle.append(conn)

    def _drop(self) -> None:
        self._open -= 1
        if self._waiters is not None and self._waiters._getters:  # type: ignore[attr-defined]  # Queue's waiting get()s
            self._waiters.put_nowait(None)  # a waiter opens the replacement

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One statement's rows; a connection a server restart broke is replaced once."""
        for attempt in (1, 2):
            conn = await self._acquire()
            try:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()  # every statement sent here returns rows
            except OperationalError:
                if not conn.broken or attempt == 2:  # e.g. a deadlock: the statement failed, not the link
                    raise
                await conn.close()
            finally:
                self._release(conn)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
            self._open -= 1


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


# A row by column name is a Mapping[str, Any] here. SQLAlchemy's RowMapping also accepts Column
# objects as keys, so it is declared Mapping[str | Column..., Any], which a Mapping[str, Any]
# parameter does not take; its keys are the column names, all that this code looks up.
def first_row(result: Result[Any]) -> Mapping[str, Any] | None:
    """The first row of a result by column name, or None."""
    return cast("Mapping[str, Any] | None", result.mappings().first())


def named_rows(result: Result[Any]) -> Iterable[Mapping[str, Any]]:
    """The rows of a result by column name."""
    return cast("Iterable[Mapping[str, Any]]", result.mappings())


def sqlite_connection(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy connection on SQLite."""
    raw = conn.connection.driver_connection
    assert raw is not None  # None only once the connection is closed or invalidated
    return raw


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
