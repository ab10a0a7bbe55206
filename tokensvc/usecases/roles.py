"""Roles of a service, as the API and the console read them."""

from __future__ import annotations

from sqlalchemy import Connection

from ..context import Context
from ..paging import Page, PageRequest
from ..store.roles import list_roles as store_list
from ..store.services import get_service


async def list_roles(c: Context, *, account_sid: str, service_sid: str, req: PageRequest) -> Page:
    """One keyset page of the roles of the account's service (404 for another account's)."""

    def read(conn: Connection) -> Page:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        return store_list(conn, service_sid=service_sid, req=req)

    return await c.db.read(read)
