"""PostgreSQL on the event loop: the token hot path's statements on a psycopg async pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from psycopg import OperationalError

from .batcher import Batcher

T = TypeVar("T")


class AsyncPostgres:
    """A psycopg_pool.AsyncConnectionPool of autocommit connections, used on the event loop for
    the token hot path's statements (each atomic on its own: the read, and INSERT … ON CONFLICT
    DO NOTHING). A threadpool hop plus SQLAlchemy's sync path cost ~600 µs of CPU per request
    there; this costs what the driver costs (measured with bench/tokens.py --database postgresql).

    The pool belongs to the loop that opened it: it opens on first use and closes with the app's
    lifespan; a statement on another loop (tests, a restarted app) gets a pool of its own. The
    pool discards a connection returned mid-statement (a cancelled caller) or broken."""

    def __init__(self, url: str, size: int = 8):
        from sqlalchemy.engine import make_url

        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.size = size
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batchers: dict[str, Batcher[Any, Any]] = {}  # callers' batchers by kind, for this loop

    async def _opened(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            self._loop = loop
            # min_size = max_size: the connections stay open, as a hot path wants them; opened
            # in the background, the first statement waiting only for the first of them.
            self._pool = AsyncConnectionPool(self.conninfo, min_size=self.size, max_size=self.size, open=False,
                                             kwargs={"autocommit": True, "row_factory": dict_row},
                                             name="tokensvc-hot-path")
            await self._pool.open()
        return self._pool

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One statement's rows; a connection a server restart broke is replaced once."""
        pool = self._pool if self._loop is asyncio.get_running_loop() and self._pool is not None \
            else await self._opened()
        for attempt in (1, 2):
            async with pool.connection() as conn:
                try:
                    cur = await conn.execute(sql, params)
                    return await cur.fetchall()  # every statement sent here returns rows
                except OperationalError:
                    if not conn.broken or attempt == 2:  # e.g. a deadlock: the statement failed, not the link
                        raise
            # broken (a server restart): the pool discards it on return, and the next one is fresh
        raise AssertionError("unreachable")

    async def transaction(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """await fn(conn) in one transaction on a pooled connection (BEGIN … COMMIT, ROLLBACK
        when fn raises); a connection given back mid-transaction (a cancelled caller) is
        rolled back or discarded by the pool."""
        pool = self._pool if self._loop is asyncio.get_running_loop() and self._pool is not None \
            else await self._opened()
        async with pool.connection() as conn, conn.transaction():
            return await fn(conn)

    async def aclose(self) -> None:
        pool, self._pool, self._loop = self._pool, None, None
        if pool is not None:
            await pool.close()

