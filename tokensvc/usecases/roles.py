"""Roles of a service, as the API and the console read them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


ROLES_SHOWN = PageRequest(100, 0, None)  # a service has a handful of roles: the first 100 are all of them


async def service_and_roles(c: Context, *, account_sid: str, service_sid: str) -> tuple[Mapping[str, Any], Page]:
    """The account's service and the first 100 of its roles, in one read (404 for another
    account's): what a page about the service shows its roles' names from."""

    def read(conn: Connection) -> tuple[Mapping[str, Any], Page]:
        svc = get_service(conn, account_sid=account_sid, sid=service_sid)
        return svc, store_list(conn, service_sid=service_sid, req=ROLES_SHOWN)

    return await c.db.read(read)
