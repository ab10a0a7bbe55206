"""The one way a batch writer hands its callers their outcomes (GroupCommit, Batcher, presence).

A writer collects (item, future) pairs, runs them as one batch, and gives each future its own
outcome: a result, or the exception to raise in its caller. The rules, the same for every writer:
a future already done (its caller was cancelled or gave up) is skipped; a batch that fails as a
whole fails every caller in it; a writer cancelled mid-batch (shutdown) ends every caller still
waiting (cancelled, or failed with the writer's own "stopping" error) and stays cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


def resolve(futures: Sequence[asyncio.Future[Any]], outcomes: Sequence[Any]) -> None:
    """Give each future its outcome, in order: an exception instance is raised in its caller,
    anything else is its result. Futures already done are skipped."""
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def abandon(futures: Sequence[asyncio.Future[Any]], stopping: Callable[[], BaseException] | None = None) -> None:
    """End every future still pending: cancelled, or failed with `stopping()` when given."""
    for future in futures:
        if not future.done():
            if stopping is None:
                future.cancel()
            else:
                future.set_exception(stopping())


async def settle(futures: Sequence[asyncio.Future[Any]], work: Awaitable[Sequence[Any]], *,
                 stopping: Callable[[], BaseException] | None = None) -> None:
    """Await a batch's outcomes (one per future) and resolve the futures with them. An exception
    of `work` is every future's outcome; cancellation abandons the futures and propagates."""
    try:
        outcomes = await work
    except asyncio.CancelledError:
        abandon(futures, stopping)
        raise
    except Exception as exc:
        outcomes = [exc] * len(futures)
    try:
        resolve(futures, outcomes)
    finally:  # a wrong count of outcomes is a bug: nobody may wait forever for it
        abandon(futures, lambda: RuntimeError("the batch gave no outcome for this call"))
