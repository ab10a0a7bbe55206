"""Console sessions signed out of (tables.console_signouts), as functions of a connection."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from .tables import console_signouts


def record(conn: Connection, *, nonce_hash: str, expires_at: int, now: int) -> None:
    """The session of that nonce hash is over until `expires_at`; rows past theirs go."""
    conn.execute(delete(console_signouts).where(console_signouts.c.expires_at < now))
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(console_signouts)
    # a second sign-out of the same session (two tabs, at once on two replicas) changes nothing
    conn.execute(insert.values(nonce_hash=nonce_hash, expires_at=expires_at).on_conflict_do_nothing())


def signed_out(conn: Connection, *, nonce_hash: str) -> bool:
    return conn.execute(select(console_signouts.c.nonce_hash)
                        .where(console_signouts.c.nonce_hash == nonce_hash)).first() is not None
