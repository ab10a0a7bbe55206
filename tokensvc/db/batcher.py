"""Concurrent calls of one kind of statement, sent together (PostgreSQL's hot path)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .futures import abandon, settle

T = TypeVar("T")
R = TypeVar("R")


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
                if batch:
                    await settle([future for _, future in batch], self.run([item for item, _ in batch]))
        finally:
            # Free the lane now: a done callback runs a turn later, and a call made in between
            # (by a caller this batch just woke) would find no lane and no drain to serve it.
            self._drains.discard(asyncio.current_task())
            abandon([future for _, future in batch])  # cancelled before the batch began: nobody waits forever
