"""API keys: create, update, delete (a deleted key's tokens and sessions end everywhere)."""

from __future__ import annotations

from typing import Any

from ..context import Context
from ..store.api_keys import create_key, delete_key, update_key
from .events import ApiKeyRemoved, Event


async def create_api_key(c: Context, *, account_sid: str, friendly_name: str | None) -> tuple[Any, list[Event]]:
    """(row, secret): the secret is returned here and never again."""
    made = await c.db.run(lambda conn: create_key(conn, account_sid=account_sid, friendly_name=friendly_name,
                                                  box=c.box))
    return made, []


async def update_api_key(c: Context, *, account_sid: str, sid: str,
                         friendly_name: str | None) -> tuple[Any, list[Event]]:
    row = await c.db.run(lambda conn: update_key(conn, account_sid=account_sid, sid=sid, friendly_name=friendly_name))
    return row, []


async def delete_api_key(c: Context, *, account_sid: str, sid: str) -> tuple[None, list[Event]]:
    await c.db.run(lambda conn: delete_key(conn, account_sid=account_sid, sid=sid))
    return None, [ApiKeyRemoved(sid)]
