"""Reads of the client connections table (presence, tokensvc/presence.py, writes it)."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, distinct, func, select

from ..db import now
from .tables import connections

_ONLINE = (select(func.count(distinct(connections.c.user_sid)))
           .where(connections.c.service_sid == bindparam("service_sid"),
                  connections.c.heartbeat_at > bindparam("since")))


def online_count(conn: Connection, *, service_sid: str, timeout: int) -> int:
    """How many users of the service have a live connection on any process: one whose heartbeat
    is younger than `timeout` seconds (the rule of store.users.is_online)."""
    return int(conn.execute(_ONLINE, {"service_sid": service_sid, "since": now() - timeout}).scalar() or 0)
