"""Roles of a service: list, fetch, create, update, delete, each in one transaction that first
finds the account's service (404 for another account's), as the API and the console call them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from ..context import Context
from ..paging import Page, PageRequest
from ..store import roles as store
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


async def get_role(c: Context, *, account_sid: str, service_sid: str, sid: str) -> Mapping[str, Any]:
    def read(conn: Connection) -> Mapping[str, Any]:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        return store.get_role(conn, service_sid=service_sid, sid=sid)

    return await c.db.read(read)


async def create_role(c: Context, *, account_sid: str, service_sid: str, friendly_name: str, type: str,
                      permissions: list[str]) -> Mapping[str, Any]:
    """A new role of that type (deployment or channel) with those permissions."""

    def write(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=account_sid, sid=service_sid)
        return store.create_role(conn, service=svc, friendly_name=friendly_name, type=type, permissions=permissions)

    return await c.db.run(write)


async def update_role(c: Context, *, account_sid: str, service_sid: str, sid: str,
                      permissions: list[str] | None) -> Mapping[str, Any]:
    """Replace its permission set (None: change nothing)."""

    def write(conn: Connection) -> Mapping[str, Any]:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        return store.update_role(conn, service_sid=service_sid, sid=sid, permissions=permissions)

    return await c.db.run(write)


async def delete_role(c: Context, *, account_sid: str, service_sid: str, sid: str) -> None:
    """Delete a role no user, member or invite holds and the service does not default to (409 50100 otherwise)."""

    def write(conn: Connection) -> None:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        store.delete_role(conn, service_sid=service_sid, sid=sid)

    await c.db.run(write)
