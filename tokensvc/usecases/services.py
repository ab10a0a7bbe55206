"""Services: list, fetch, create, update, delete (roles and users go with a deleted service)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..context import Context
from ..paging import Page, PageRequest
from ..store import kicks
from ..store.services import create_service as store_create
from ..store.services import delete_service as store_delete
from ..store.services import get_service as store_get
from ..store.services import list_services as store_list
from ..store.services import update_service as store_update
from .events import Event, ServiceRemoved, ServiceUpdated


async def list_services(c: Context, *, account_sid: str, req: PageRequest) -> Page:
    """One keyset page of the account's services, in creation order."""
    return await c.db.read(lambda conn: store_list(conn, account_sid=account_sid, req=req))


async def get_service(c: Context, *, account_sid: str, sid: str) -> Mapping[str, Any]:
    """The account's service; 404 for another account's, as for a missing one."""
    return await c.db.read(lambda conn: store_get(conn, account_sid=account_sid, sid=sid))


async def create_service(c: Context, *, account_sid: str, friendly_name: str) -> tuple[Any, list[Event]]:
    svc = await c.db.run(lambda conn: store_create(conn, account_sid=account_sid, friendly_name=friendly_name))
    return svc, []


async def update_service(c: Context, *, account_sid: str, sid: str, changes: dict[str, Any]) -> tuple[Any, list[Event]]:
    svc = await c.db.run(lambda conn: store_update(conn, account_sid=account_sid, sid=sid, changes=changes))
    return svc, [ServiceUpdated(sid)]


async def delete_service(c: Context, *, account_sid: str, sid: str) -> tuple[None, list[Event]]:
    def remove(conn: Any) -> None:
        store_delete(conn, account_sid=account_sid, sid=sid)
        kicks.record(conn, kicks.SERVICE, sid)  # its sessions, on every replica

    await c.db.run(remove)
    return None, [ServiceRemoved(sid)]
