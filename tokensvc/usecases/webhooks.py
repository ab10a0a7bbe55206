"""The webhook outbox as an operator sees it (`tokensvc webhooks`): what waits or was given up
on, sending again what was given up on, and dropping what should not go out (the rows of an
account whose `secrets.key` is lost wait for a process that can sign them, forever)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .. import errors
from ..context import Context
from ..store import outbox
from ..store.outbox import Chosen

PAGE = 500


async def outbox_rows(c: Context, chosen: Chosen) -> AsyncIterator[dict[str, Any]]:
    """The chosen rows in commit order, read a page at a time (any number in constant memory)."""
    after = 0
    while True:
        page = await c.db.read(lambda conn, after=after: outbox.chosen_rows(conn, chosen, after_id=after, limit=PAGE))
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1]["id"]


def _some(chosen: Chosen) -> Chosen:
    if not chosen.anything:  # never every row by omission
        raise errors.invalid_param("rows", "name the rows: by id, service, account or status")
    return chosen


async def retry_failed(c: Context, chosen: Chosen) -> int:
    """Rows given up on, pending again: the dispatcher of any `tokensvc serve` on this database sends them."""
    return int(await c.db.run(lambda conn: outbox.requeue(conn, _some(chosen))))


async def drop(c: Context, chosen: Chosen) -> int:
    """Delete the chosen rows; how many."""
    return int(await c.db.run(lambda conn: outbox.drop(conn, _some(chosen))))
