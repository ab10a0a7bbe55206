"""Tombstones of deleted users (SPEC §11: a deleted user stays deleted).

Deleting a user leaves a row saying "this identity of this service was deleted at T" until every
token issued before T has expired (T + max_ttl + clock skew); a token issued at or before T then
cannot re-create the user, on any replica (the rows are in the shared database). The row holds
an HMAC of service SID and identity, keyed by a key derived from keys/secrets.key, never the
identity: the identity's PII is gone from the store (SPEC §3) and the digest cannot be reversed
by guessing identities without that key.

Only first encounters (and users created after the token) ask: a returning user created before
its token was issued costs no read here, and the answer for a user created after its token is
remembered by user SID (it cannot change while that user exists: a new deletion removes the row).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from .. import errors
from ..lifetimes import LEEWAY, acceptable_for
from ..tokens import Verified
from .tables import tombstones

_BY_DIGEST = select(tombstones.c.deleted_at).where(tombstones.c.digest == bindparam("b_digest"))
_BY_DIGESTS = select(tombstones.c.digest, tombstones.c.deleted_at).where(
    tombstones.c.digest.in_(bindparam("b_digests", expanding=True)))
_CHUNK = 500
_BY_DIGEST_PG = str(_BY_DIGEST.compile(dialect=postgresql_dialect.psycopg.dialect()))
_SWEEP = delete(tombstones).where(tombstones.c.expires_at < bindparam("b_now"))


def _upsert(dialect: Any) -> Any:
    """INSERT, or on a second deletion of the identity move its row to the later time."""
    stmt = dialect.insert(tombstones)
    return stmt.on_conflict_do_update(index_elements=[tombstones.c.digest],
                                      set_={"deleted_at": stmt.excluded.deleted_at,
                                            "expires_at": stmt.excluded.expires_at})


_UPSERT = {"sqlite": _upsert(sqlite_dialect), "postgresql": _upsert(postgresql_dialect)}


def refused() -> errors.TwilioError:
    return errors.invalid_token("Access Token was issued before its user was deleted")


class Tombstones:
    """Writes and asks about tombstones; one per process (see `of`)."""

    REMEMBERED = 100_000  # users created after a token was issued, by SID

    def __init__(self, key: bytes, *, max_ttl: int):
        self._key = key
        self.max_ttl = max_ttl
        self._by_user: OrderedDict[str, int | None] = OrderedDict()

    @staticmethod
    def must_ask(user: Mapping[str, Any] | None, issued_at: int) -> bool:
        """Whether a token issued at `issued_at` might predate a deletion of its user: only when
        the user is missing, or was created after the token."""
        return user is None or user["date_created"] > issued_at

    @staticmethod
    def refuses_since(deleted_at: int | None, issued_at: int) -> bool:
        """The rule: a token issued at or before the deletion is refused. Whole seconds: a token
        issued in the very second of the deletion counts as before it."""
        return deleted_at is not None and issued_at <= deleted_at

    def digest(self, service_sid: str, identity: str) -> str:
        """HMAC-SHA256 (hex) of service SID and identity; the SID's fixed length keeps them apart."""
        message = service_sid.encode() + identity.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issued_at(self, verified: Verified) -> int:
        """When the token was issued: iat, else nbf, else the earliest it could have been."""
        if verified.issued_at is not None:
            return verified.issued_at
        return verified.expires_at - self.max_ttl - LEEWAY

    def bury(self, conn: Connection, *, service_sid: str, identity: str, at: int) -> None:
        """Record the deletion (in the deleting transaction) and drop tombstones that expired."""
        conn.execute(_UPSERT[conn.dialect.name], {
            "digest": self.digest(service_sid, identity), "deleted_at": at,
            "expires_at": at + acceptable_for(self.max_ttl)})
        sweep(conn, at)

    def refuses(self, conn: Connection, *, service_sid: str, identity: str, issued_at: int) -> bool:
        """Whether the identity was deleted at or after `issued_at` (one primary-key read)."""
        deleted_at = conn.execute(_BY_DIGEST, {"b_digest": self.digest(service_sid, identity)}).scalar()
        return self.refuses_since(deleted_at, issued_at)

    def deleted_many(self, conn: Connection, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Deletion times of those (service SID, identity) pairs that have a tombstone, one IN
        read per 500 (a burst of first connects asks once, not once each)."""
        by_digest = {self.digest(service_sid, identity): (service_sid, identity) for service_sid, identity in pairs}
        digests = sorted(by_digest)
        found: dict[tuple[str, str], int] = {}
        for i in range(0, len(digests), _CHUNK):
            for digest, deleted_at in conn.execute(_BY_DIGESTS, {"b_digests": digests[i:i + _CHUNK]}):
                found[by_digest[digest]] = deleted_at
        return found

    async def deleted_at(self, db: Any, *, service_sid: str, identity: str) -> int | None:
        """When the identity was last deleted (None: no tombstone), for request handlers: on
        PostgreSQL on the event loop's async connections."""
        digest = self.digest(service_sid, identity)
        if db.apg is not None:
            rows = await db.apg.fetchall(_BY_DIGEST_PG, {"b_digest": digest})
            return rows[0]["deleted_at"] if rows else None
        return await db.read(lambda conn: conn.execute(_BY_DIGEST, {"b_digest": digest}).scalar())

    async def refuses_user(self, db: Any, *, user: Mapping[str, Any], identity: str, issued_at: int) -> bool:
        """`refuses` for an existing user created after the token: asked once per user."""
        sid = user["sid"]
        if sid in self._by_user:
            deleted_at = self._by_user[sid]
        else:
            deleted_at = await self.deleted_at(db, service_sid=user["service_sid"], identity=identity)
            self._by_user[sid] = deleted_at
            while len(self._by_user) > self.REMEMBERED:
                self._by_user.popitem(last=False)
        return self.refuses_since(deleted_at, issued_at)


def sweep(conn: Connection, now: int) -> int:
    """Delete tombstones no unexpired token can need any more."""
    return conn.execute(_SWEEP, {"b_now": now}).rowcount
