"""Presence as admins read it: the live count of a service's users online (SPEC §11)."""

from __future__ import annotations

from sqlalchemy import Connection

from ..context import Context
from ..store.connections import online_count as store_online_count
from ..store.services import get_service


async def online_count(c: Context, *, account_sid: str, service_sid: str) -> int:
    """Users of the account's service connected on any replica now (404 for another account's)."""
    timeout = c.settings.presence_timeout

    def read(conn: Connection) -> int:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        return store_online_count(conn, service_sid=service_sid, timeout=timeout)

    return await c.db.read(read)
