"""Accounts: the tenants. A SHA-256 of each auth token authenticates; an AES-GCM copy (SecretBox,
bound to the account SID) signs its webhooks (SPEC §10), kept for accounts created or rotated
since migration 0009 and for the bootstrap account of TOKENSVC_AUTH_TOKEN."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy import Connection, select

from ..crypto import SecretBox, hash_secret, new_secret
from ..db import now
from ..sids import is_sid, new_sid
from .tables import accounts


@dataclass(frozen=True)
class NewAccount:
    sid: str
    auth_token: str
    created: bool


def create_account(conn: Connection, *, friendly_name: str = "tokensvc account",
                   sid: str | None = None, auth_token: str | None = None, box: SecretBox | None = None) -> NewAccount:
    """Create an account; the auth token is returned here and never again."""
    sid = sid or new_sid("AC")
    if not is_sid("AC", sid):
        raise ValueError("an account SID is AC followed by 32 hex digits")
    token = auth_token or new_secret()
    ts = now()
    conn.execute(accounts.insert().values(
        sid=sid, friendly_name=friendly_name, auth_token_hash=hash_secret(token),
        auth_token_enc=box.encrypt(token, sid) if box is not None else None, date_created=ts, date_updated=ts))
    return NewAccount(sid, token, True)


def rotate_token(conn: Connection, *, sid: str, box: SecretBox) -> str:
    """A new auth token for the account (hash and sealed copy); the old one stops working."""
    token = new_secret()
    done = conn.execute(accounts.update().where(accounts.c.sid == sid).values(
        auth_token_hash=hash_secret(token), auth_token_enc=box.encrypt(token, sid), date_updated=now())).rowcount
    if not done:
        raise LookupError(sid)
    return token


class ForeignSecret(Exception):
    """The account keeps an AES-GCM copy of its auth token that this process's secrets.key
    cannot open: another deployment's key shares this database (or the key was replaced)."""


def signing_token(conn: Connection, *, sid: str, box: SecretBox) -> str | None:
    """The account's auth token to sign its webhooks with; None when only its hash is kept.
    ForeignSecret when a copy is kept that this process's secrets.key cannot open: such an
    account's webhooks are another process's to sign, never to be sent unsigned from here."""
    sealed = conn.execute(select(accounts.c.auth_token_enc).where(accounts.c.sid == sid)).scalar()
    if not sealed:
        return None
    if not box.opens(sealed, sid):
        raise ForeignSecret(sid)
    return box.decrypt(sealed, sid)


def ensure_bootstrap_account(conn: Connection, *, sid: str | None, auth_token: str | None,
                             box: SecretBox | None = None) -> NewAccount | None:
    """The account of TOKENSVC_ACCOUNT_SID/AUTH_TOKEN (its token kept in step with the
    environment), or a generated one when the store has none; None when nothing was created."""
    if sid and auth_token:
        row = conn.execute(select(accounts.c.auth_token_hash, accounts.c.auth_token_enc)
                           .where(accounts.c.sid == sid)).first()
        if row is None:
            return create_account(conn, sid=sid, auth_token=auth_token, friendly_name="bootstrap account", box=box)
        sealed = row.auth_token_enc
        stale_copy = box is not None and not (
            sealed and box.opens(sealed, sid) and box.decrypt(sealed, sid) == auth_token)
        if row.auth_token_hash != hash_secret(auth_token) or stale_copy:
            values = {"auth_token_hash": hash_secret(auth_token), "date_updated": now()}
            if box is not None:
                values["auth_token_enc"] = box.encrypt(auth_token, sid)
            conn.execute(accounts.update().where(accounts.c.sid == sid).values(**values))
        return None
    if conn.execute(select(accounts.c.id).limit(1)).first() is None:
        return create_account(conn, friendly_name="bootstrap account", box=box)
    return None


def served_account(conn: Connection, configured: str | None) -> str | None:
    """The account whose stored secrets tell whether this process has the right secrets.key:
    TOKENSVC_ACCOUNT_SID, else the only account of an embedded database (None with several: a
    database shared by deployments with keys of their own, as the test suite's is)."""
    if configured:
        return configured
    rows = conn.execute(select(accounts.c.sid).order_by(accounts.c.id).limit(2)).scalars().all()
    return rows[0] if len(rows) == 1 else None


def record_key_check(conn: Connection, *, sid: str | None, check: str) -> bool:
    """Record `check` (crypto.SecretBox.check_value) on the account when it has none; whether the
    account's recorded value is this one (True without an account to compare with)."""
    if not sid:
        return True
    conn.execute(accounts.update().where(accounts.c.sid == sid, accounts.c.key_check.is_(None))
                 .values(key_check=check))
    recorded = conn.execute(select(accounts.c.key_check).where(accounts.c.sid == sid)).scalar()
    return recorded is None or hmac.compare_digest(recorded, check)


def list_accounts(conn: Connection) -> list[dict]:
    rows = conn.execute(select(accounts.c.sid, accounts.c.friendly_name, accounts.c.date_created)
                        .order_by(accounts.c.id)).all()
    return [dict(r._mapping) for r in rows]
