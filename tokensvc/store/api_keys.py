"""API keys (Twilio 2010 API): a SID + secret that acts for its account.

The secret is shown once, at creation. What is stored: a SHA-256 of it (for Basic auth, checked
in constant time) and an AES-GCM ciphertext of it (HS256 tokens it signed can only be verified
with the secret itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from .. import errors
from ..crypto import SecretBox, hash_secret, new_secret
from ..db import first_row, now
from ..paging import Page, PageRequest, fetch_page
from ..sids import is_sid, new_sid
from .tables import api_keys


def create_key(conn: Connection, *, account_sid: str, friendly_name: str | None,
               box: SecretBox) -> tuple[dict[str, Any], str]:
    """A new API key and its secret (returned only here)."""
    sid = new_sid("SK")
    secret = new_secret()
    ts = now()
    row = {"sid": sid, "account_sid": account_sid, "friendly_name": friendly_name,
           "secret_hash": hash_secret(secret), "secret_enc": box.encrypt(secret, sid),
           "date_created": ts, "date_updated": ts}
    conn.execute(api_keys.insert().values(**row))
    return row, secret


def get_key(conn: Connection, *, account_sid: str, sid: str) -> Mapping[str, Any]:
    if not is_sid("SK", sid):
        raise errors.not_found()
    row = first_row(conn.execute(select(api_keys).where(api_keys.c.sid == sid)))
    if row is None or row["account_sid"] != account_sid:
        raise errors.not_found()
    return row


def list_keys(conn: Connection, *, account_sid: str, req: PageRequest) -> Page:
    return fetch_page(conn, select(api_keys).where(api_keys.c.account_sid == account_sid), api_keys.c.id, req)


def update_key(conn: Connection, *, account_sid: str, sid: str, friendly_name: str | None) -> Mapping[str, Any]:
    key = get_key(conn, account_sid=account_sid, sid=sid)
    if friendly_name is None:
        return key
    conn.execute(api_keys.update().where(api_keys.c.sid == sid).values(friendly_name=friendly_name, date_updated=now()))
    return get_key(conn, account_sid=account_sid, sid=sid)


def delete_key(conn: Connection, *, account_sid: str, sid: str) -> None:
    get_key(conn, account_sid=account_sid, sid=sid)
    if not conn.execute(api_keys.delete().where(api_keys.c.sid == sid)).rowcount:
        raise errors.not_found()  # a concurrent request deleted it after we read it
