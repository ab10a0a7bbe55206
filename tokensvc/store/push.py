"""Push credentials and bindings (SPEC §9), and `users.notifiable`, which they keep.

`users.notifiable` is null until a user's first binding, then whether one exists. Every binding
insert or delete recomputes it in its own transaction, after locking the user rows concerned (on
PostgreSQL `FOR UPDATE`; SQLite has one writer): two transactions changing one user's bindings take
turns, so the second recomputes from what the first committed. Locks are always taken credential
first, then users, so a registration and a credential's deletion cannot deadlock. A user's deletion
takes its bindings by cascade: no flag is left to keep.

Secrets and device addresses are sealed with the SecretBox (the key of API key secrets), bound to
their row's SID; nothing here ever opens them: delivering pushes is out of scope.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, exists, select, update
from sqlalchemy.exc import IntegrityError

from .. import errors
from ..crypto import SecretBox
from ..db import first_row, is_foreign_key_violation, now
from ..paging import Page, PageRequest, fetch_page
from ..sids import is_sid, new_sid
from .push_tables import bindings, credentials
from .tables import users
from .users import get_user

PUSH_TYPES = ("apn", "gcm", "fcm")
# The secret parameters of each credential type (SPEC §9), by column-free name.
SECRET_FIELDS = {"apn": ("certificate", "private_key"), "gcm": ("api_key",), "fcm": ("secret",)}
Row = Mapping[str, Any]


class _Unset:
    pass


Unset: Any = _Unset()

# ---------------------------------------------------------------- credentials

_CREDENTIAL = select(*(c for c in credentials.c if c.name != "secrets_enc"))


def _seal_secrets(box: SecretBox, sid: str, secrets: Mapping[str, str]) -> str:
    return box.encrypt(json.dumps(dict(secrets), sort_keys=True), f"credential:{sid}")


def create_credential(conn: Connection, *, account_sid: str, type: str, friendly_name: str | None,
                      sandbox: bool | None, secrets: Mapping[str, str], box: SecretBox) -> Row:
    """A new credential; `secrets` holds the given ones of its type, sealed and never returned."""
    sid, ts = new_sid("CR"), now()
    conn.execute(credentials.insert().values(
        sid=sid, account_sid=account_sid, friendly_name=friendly_name, type=type,
        sandbox=(bool(sandbox) if type == "apn" else None), secrets_enc=_seal_secrets(box, sid, secrets),
        date_created=ts, date_updated=ts))
    return get_credential(conn, account_sid=account_sid, sid=sid)


def get_credential(conn: Connection, *, account_sid: str, sid: str, for_update: bool = False) -> Row:
    """The account's credential (without its sealed secrets), or 404."""
    if not is_sid("CR", sid):
        raise errors.not_found()
    stmt = _CREDENTIAL.where(credentials.c.sid == sid)
    row = first_row(conn.execute(stmt.with_for_update() if for_update else stmt))
    if row is None or row["account_sid"] != account_sid:
        raise errors.not_found()
    return row


def list_credentials(conn: Connection, *, account_sid: str, req: PageRequest) -> Page:
    return fetch_page(conn, _CREDENTIAL.where(credentials.c.account_sid == account_sid), credentials.c.id, req)


def update_credential(conn: Connection, *, account_sid: str, sid: str, friendly_name: Any = Unset,
                      sandbox: Any = Unset, secrets: Mapping[str, str], box: SecretBox) -> Row:
    """Change the name, apn's sandbox flag or some of the secrets (the others are kept)."""
    cred = get_credential(conn, account_sid=account_sid, sid=sid, for_update=True)
    values: dict[str, Any] = {}
    if friendly_name is not Unset:
        values["friendly_name"] = friendly_name
    if sandbox is not Unset and cred["type"] == "apn":
        values["sandbox"] = sandbox
    secrets = {name: value for name, value in secrets.items() if name in SECRET_FIELDS[cred["type"]]}
    if secrets:
        sealed = conn.execute(select(credentials.c.secrets_enc).where(credentials.c.sid == sid)).scalar_one()
        kept = json.loads(box.decrypt(sealed, f"credential:{sid}"))
        values["secrets_enc"] = _seal_secrets(box, sid, {**kept, **secrets})
    if not values:
        return cred
    values["date_updated"] = now()
    conn.execute(credentials.update().where(credentials.c.sid == sid).values(**values))
    return get_credential(conn, account_sid=account_sid, sid=sid)


def delete_credential(conn: Connection, *, account_sid: str, sid: str) -> list[str]:
    """Delete the credential and its bindings; the SIDs of the users whose bindings went."""
    # Locked first: a registration holds it (KEY SHARE) until it commits, and waits behind us.
    get_credential(conn, account_sid=account_sid, sid=sid, for_update=True)
    owners = sorted(set(conn.execute(select(bindings.c.user_sid).where(bindings.c.credential_sid == sid)).scalars()))
    _lock_users(conn, owners)
    # RETURNING: also the owners of a binding committed after the read above (SQLite outside
    # the group commit, where that read is not yet in the write transaction).
    gone = conn.execute(bindings.delete().where(bindings.c.credential_sid == sid).returning(bindings.c.user_sid))
    owners = sorted(set(owners) | set(gone.scalars()))
    _refresh_notifiable(conn, owners)
    conn.execute(credentials.delete().where(credentials.c.sid == sid))
    return owners


# ---------------------------------------------------------------- users.notifiable


def _lock_users(conn: Connection, user_sids: Sequence[str]) -> None:
    """Lock these users' rows, in SID order (no deadlock between two lockers)."""
    if user_sids and conn.dialect.name == "postgresql":
        conn.execute(select(users.c.sid).where(users.c.sid.in_(sorted(user_sids)))
                     .order_by(users.c.sid).with_for_update())


def _refresh_notifiable(conn: Connection, user_sids: Iterable[str]) -> None:
    """users.notifiable := whether a binding is left (for users that had one: never back to null)."""
    sids = sorted(set(user_sids))
    if sids:
        left = exists().where(bindings.c.user_sid == users.c.sid)
        conn.execute(update(users).where(users.c.sid.in_(sids)).values(notifiable=left))


# ---------------------------------------------------------------- bindings

# A binding as the API shows it: its columns but the sealed address, and its user's identity.
_BINDING = (select(*(c for c in bindings.c if c.name != "address_enc"), users.c.identity)
            .join_from(bindings, users, users.c.sid == bindings.c.user_sid))


def register_binding(conn: Connection, *, account_sid: str, service_sid: str, user_key: str, binding_type: str,
                     address: str, credential_sid: str, endpoint: str, box: SecretBox) -> tuple[Row, bool]:
    """Create the binding of (user, endpoint, binding_type), or update the one there is:
    (binding, created). The user must exist (registration never provisions): 404 otherwise."""
    if not is_sid("CR", credential_sid):
        raise errors.unknown_credential()
    # FOR KEY SHARE: the credential cannot be deleted before this binding commits (SPEC §9 cascade).
    cred = first_row(conn.execute(select(credentials.c.account_sid, credentials.c.type).where(
        credentials.c.sid == credential_sid).with_for_update(key_share=True, read=True)))
    if cred is None or cred["account_sid"] != account_sid:
        raise errors.unknown_credential()
    if cred["type"] != binding_type:
        raise errors.credential_type_mismatch()
    user = get_user(conn, service_sid=service_sid, key=user_key)
    _lock_users(conn, [user["sid"]])
    key = (bindings.c.user_sid == user["sid"], bindings.c.endpoint == endpoint, bindings.c.binding_type == binding_type)
    found = first_row(conn.execute(select(bindings.c.sid).where(*key)))
    ts = now()
    created = found is None
    if created:
        sid = new_sid("BS")
        created = _insert_binding(conn, dict(
            sid=sid, account_sid=account_sid, service_sid=service_sid, user_sid=user["sid"],
            credential_sid=credential_sid, endpoint=endpoint, binding_type=binding_type,
            address_enc=box.encrypt(address, f"binding:{sid}"), date_created=ts, date_updated=ts))
        if not created:  # a concurrent registration of the key won: it is updated like an existing one
            found = first_row(conn.execute(select(bindings.c.sid).where(*key)))
            if found is None:
                raise errors.database_busy()  # won and deleted again between our statements: retry
    if not created:
        assert found is not None
        sid = found["sid"]
        conn.execute(bindings.update().where(bindings.c.sid == sid).values(
            credential_sid=credential_sid, address_enc=box.encrypt(address, f"binding:{sid}"), date_updated=ts))
    # Unconditionally: what was read before the lock may be stale.
    conn.execute(update(users).where(users.c.sid == user["sid"]).values(notifiable=True))
    return get_binding(conn, service_sid=service_sid, sid=sid), created


def _insert_binding(conn: Connection, values: Mapping[str, Any]) -> bool:
    """Insert a binding; False when its key is taken (the unique constraint decides a race the
    user lock did not serialize: SQLite outside the group commit). PostgreSQL: in a savepoint,
    as a failed statement would abort the whole transaction; SQLite undoes only the statement."""
    try:
        if conn.dialect.name == "postgresql":
            with conn.begin_nested():
                conn.execute(bindings.insert().values(**values))
        else:
            conn.execute(bindings.insert().values(**values))
    except IntegrityError as exc:
        if is_foreign_key_violation(exc):  # the user or the credential went meanwhile
            raise (errors.unknown_credential() if _credential_gone(conn, values["credential_sid"])
                   else errors.not_found()) from None
        return False
    return True


def _credential_gone(conn: Connection, sid: str) -> bool:
    return conn.execute(select(credentials.c.id).where(credentials.c.sid == sid)).first() is None


def get_binding(conn: Connection, *, service_sid: str, sid: str, user_sid: str | None = None) -> Row:
    """A binding of the service (and of that user, when given), or 404."""
    if not is_sid("BS", sid):
        raise errors.not_found()
    row = first_row(conn.execute(_BINDING.where(bindings.c.sid == sid)))
    if row is None or row["service_sid"] != service_sid or (user_sid is not None and row["user_sid"] != user_sid):
        raise errors.not_found()
    return row


def list_bindings(conn: Connection, *, service_sid: str, req: PageRequest, types: Sequence[str] = (),
                  identities: Sequence[str] = (), user_sid: str | None = None) -> Page:
    """A service's bindings (or one user's), filtered by binding types and identities, in creation order."""
    if user_sid is not None:
        stmt = _BINDING.where(bindings.c.user_sid == user_sid)
    else:
        stmt = _BINDING.where(bindings.c.service_sid == service_sid)
    if types:
        stmt = stmt.where(bindings.c.binding_type.in_(sorted(set(types))))
    if identities:
        stmt = stmt.where(users.c.service_sid == service_sid, users.c.identity.in_(sorted(set(identities))))
    return fetch_page(conn, stmt, bindings.c.id, req)


def delete_binding(conn: Connection, *, service_sid: str, sid: str, user_sid: str | None = None,
                   owner_sid: str | None = None) -> Row:
    """Delete a binding of the service (of `user_sid`, when given); `owner_sid`: only a binding of
    that user (a client's own, else 403). Returns the deleted binding."""
    row = get_binding(conn, service_sid=service_sid, sid=sid, user_sid=user_sid)
    if owner_sid is not None and row["user_sid"] != owner_sid:
        raise errors.forbidden("A client may delete only its own bindings")
    _lock_users(conn, [row["user_sid"]])
    if not conn.execute(bindings.delete().where(bindings.c.sid == sid)).rowcount:
        raise errors.not_found()  # a concurrent request deleted it after we read it
    _refresh_notifiable(conn, [row["user_sid"]])
    return row
