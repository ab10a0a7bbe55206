"""API keys: list, fetch, create, update, delete (a deleted key's tokens and sessions end everywhere)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..context import Context
from ..paging import Page, PageRequest
from ..store import kicks
from ..store.api_keys import create_key, delete_key, get_key, list_keys, update_key
from .events import ApiKeyRemoved, Event


async def list_api_keys(c: Context, *, account_sid: str, req: PageRequest) -> Page:
    """One keyset page of the account's API keys (their secrets never leave the store)."""
    return await c.db.read(lambda conn: list_keys(conn, account_sid=account_sid, req=req))


async def get_api_key(c: Context, *, account_sid: str, sid: str) -> Mapping[str, Any]:
    """The account's API key; 404 for another account's."""
    return await c.db.read(lambda conn: get_key(conn, account_sid=account_sid, sid=sid))


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
    def remove(conn: Any) -> None:
        delete_key(conn, account_sid=account_sid, sid=sid)
        kicks.record(conn, kicks.API_KEY, sid)  # the sessions of tokens it signed, on every replica

    await c.db.run(remove)
    return None, [ApiKeyRemoved(sid)]
