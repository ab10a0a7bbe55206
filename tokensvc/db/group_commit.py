"""SQLite's one writer: concurrent write jobs share a transaction (and its fsync), off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine

from .engine import sqlite_connection
from .futures import settle

T = TypeVar("T")


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
                if batch:
                    await settle([future for _, future in batch],
                                 anyio.to_thread.run_sync(self._write, [fn for fn, _ in batch]))
        finally:
            self._draining = False

    def _write(self, jobs: list[Callable[[Connection], Any]]) -> list[Any]:
        """Each job's result, or the exception it raised (futures.resolve's outcomes)."""
        outcomes: list[Any] = []
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
                    outcomes.append(exc)
                else:
                    raw.execute("RELEASE job")
                    outcomes.append(result)
        return outcomes


