"""Push (SPEC §9): an account's credentials, and the device registrations (bindings) of users.

A registration comes from a client (its token's identity, the grant's `push_credential_sid` and
`endpoint_id` as defaults; over REST or the connection) or from a backend with Basic credentials
naming an existing user. A client sees and deletes only its own bindings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from .. import errors
from ..context import Context
from ..paging import Page, PageRequest
from ..store import push as store
from ..store.services import get_service
from ..store.users import get_user
from ..tokens import Verified
from ..validation import is_text
from .events import Event

Result = tuple[Any, list[Event]]
MAX_ADDRESS = 4096  # a device token: APNs 64 hex, FCM ~160 characters; room to spare
MAX_ENDPOINT = 256


def binding_type(value: str) -> str:
    """apn | gcm | fcm, else 400 50209."""
    if value not in store.PUSH_TYPES:
        raise errors.invalid_binding_type()
    return value


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise errors.invalid_param(name, "must be a non-empty string")
    if len(value) > limit:
        raise errors.invalid_param(name, f"must be at most {limit} characters")
    if "\x00" in value or not is_text(value):
        raise errors.invalid_param(name, "must be Unicode text")
    return value


@dataclass(frozen=True)
class Registration:
    """What a device registers; `address` is write-only (never returned, never logged)."""

    binding_type: str
    address: str
    credential_sid: str
    endpoint: str

    def __repr__(self) -> str:  # the address stays out of any log line or traceback
        return (f"Registration(binding_type={self.binding_type!r}, credential_sid={self.credential_sid!r}, "
                f"endpoint={self.endpoint!r})")

    @classmethod
    def parse(cls, get: Callable[[str], Any], token: Verified | None) -> Registration:
        """From form fields or a frame's (`get(name)` is None when absent); CredentialSid and Endpoint
        default to the token's ChatGrant `push_credential_sid` and `endpoint_id`."""
        kind = get("BindingType")
        if kind is None:
            raise errors.missing_param("BindingType")
        if not isinstance(kind, str):
            raise errors.invalid_binding_type()
        address = get("Address")
        if address is None:
            raise errors.missing_param("Address")
        credential = get("CredentialSid")
        if credential is None and token is not None:
            credential = token.push_credential_sid
        if credential is None:
            raise errors.missing_param("CredentialSid")
        endpoint = get("Endpoint")
        if endpoint is None and token is not None:
            endpoint = token.endpoint_id
        if endpoint is None:
            raise errors.missing_param("Endpoint")
        if not isinstance(credential, str):
            raise errors.unknown_credential()
        return cls(binding_type(kind), _text("Address", address, MAX_ADDRESS), credential,
                   _text("Endpoint", endpoint, MAX_ENDPOINT))


async def register_binding(c: Context, *, account_sid: str, service_sid: str, user_key: str,
                           registration: Registration) -> Result:
    """((binding, created), events): a new binding, or the one of the same key updated."""
    reg = registration

    def register(conn: Any) -> Any:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        return store.register_binding(conn, account_sid=account_sid, service_sid=service_sid, user_key=user_key,
                                      binding_type=reg.binding_type, address=reg.address,
                                      credential_sid=reg.credential_sid, endpoint=reg.endpoint, box=c.box)

    return await c.db.run(register), []


async def list_credentials(c: Context, *, account_sid: str, req: PageRequest) -> Page:
    return await c.db.read(lambda conn: store.list_credentials(conn, account_sid=account_sid, req=req))


async def get_credential(c: Context, *, account_sid: str, sid: str) -> Mapping[str, Any]:
    """The account's credential, its secrets never included; 404 for another account's."""
    return await c.db.read(lambda conn: store.get_credential(conn, account_sid=account_sid, sid=sid))


async def list_bindings(c: Context, *, account_sid: str, service_sid: str, owner: Mapping[str, Any] | None,
                        types: Sequence[str], identities: Sequence[str], req: PageRequest) -> Page:
    """One page of the service's bindings of those types and identities; a client (`owner`, its
    user) only its own: naming another identity is 403 20403."""
    if owner is not None and any(identity != owner["identity"] for identity in identities):
        raise errors.forbidden("A client may list only its own bindings")
    own = owner["sid"] if owner is not None else None

    def read(conn: Connection) -> Page:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        return store.list_bindings(conn, service_sid=service_sid, req=req, types=types, identities=identities,
                                   user_sid=own)

    return await c.db.read(read)


async def get_binding(c: Context, *, account_sid: str, service_sid: str, sid: str,
                      owner_sid: str | None) -> Mapping[str, Any]:
    """A binding of the service; a client (`owner_sid`) only its own (403 20403)."""

    def read(conn: Connection) -> Mapping[str, Any]:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        return store.get_binding(conn, service_sid=service_sid, sid=sid)

    binding = await c.db.read(read)
    if owner_sid is not None and binding["user_sid"] != owner_sid:
        raise errors.forbidden("A client may read only its own bindings")
    return binding


def _owned_user(conn: Connection, *, service_sid: str, user_key: str, owner_sid: str | None,
                action: str = "see") -> Mapping[str, Any]:
    """The user of /Users/{key}/Bindings; a client (`owner_sid`) only its own (403 20403), before
    anything of the user's is read."""
    user = get_user(conn, service_sid=service_sid, key=user_key)
    if owner_sid is not None and user["sid"] != owner_sid:
        raise errors.forbidden(f"A client may {action} only its own bindings")
    return user


async def get_user_binding(c: Context, *, account_sid: str, service_sid: str, user_key: str, sid: str,
                           owner_sid: str | None) -> Mapping[str, Any]:
    """A binding of the user (404 if it is another user's); a client only its own (403 20403)."""

    def read(conn: Connection) -> Mapping[str, Any]:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        user = _owned_user(conn, service_sid=service_sid, user_key=user_key, owner_sid=owner_sid)
        return store.get_binding(conn, service_sid=service_sid, sid=sid, user_sid=user["sid"])

    return await c.db.read(read)


async def list_user_bindings(c: Context, *, account_sid: str, service_sid: str, user_key: str,
                             owner_sid: str | None, types: Sequence[str],
                             page_request: Callable[[str], PageRequest]) -> tuple[Mapping[str, Any], Page]:
    """(user, one page of its bindings of those types); `page_request(user_sid)` parses the page
    asked for; a client (`owner_sid`) sees only its own (403 20403)."""

    def read(conn: Connection) -> tuple[Mapping[str, Any], Page]:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        user = _owned_user(conn, service_sid=service_sid, user_key=user_key, owner_sid=owner_sid)
        return user, store.list_bindings(conn, service_sid=service_sid, req=page_request(user["sid"]),
                                         types=types, user_sid=user["sid"])

    return await c.db.read(read)


async def delete_binding(c: Context, *, account_sid: str, service_sid: str, sid: str, user_key: str | None = None,
                         owner_sid: str | None = None) -> Result:
    """Delete a binding of the service (under `user_key`'s user, when given); a client (`owner_sid`)
    only its own (403 20403)."""

    def remove(conn: Any) -> Any:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        user_sid = (_owned_user(conn, service_sid=service_sid, user_key=user_key, owner_sid=owner_sid,
                                action="delete")["sid"] if user_key is not None else None)
        return store.delete_binding(conn, service_sid=service_sid, sid=sid, user_sid=user_sid, owner_sid=owner_sid)

    return await c.db.run(remove), []


async def create_credential(c: Context, *, account_sid: str, type: str, friendly_name: str | None,
                            sandbox: bool | None, secrets: Mapping[str, str]) -> Result:
    made = await c.db.run(lambda conn: store.create_credential(
        conn, account_sid=account_sid, type=type, friendly_name=friendly_name, sandbox=sandbox, secrets=secrets,
        box=c.box))
    return made, []


async def update_credential(c: Context, *, account_sid: str, sid: str, changes: Mapping[str, Any],
                            secrets: Mapping[str, str]) -> Result:
    row = await c.db.run(lambda conn: store.update_credential(
        conn, account_sid=account_sid, sid=sid, secrets=secrets, box=c.box, **changes))
    return row, []


async def delete_credential(c: Context, *, account_sid: str, sid: str) -> Result:
    """Delete the credential; its bindings go with it (and their users' is_notifiable follows)."""
    return await c.db.run(lambda conn: store.delete_credential(conn, account_sid=account_sid, sid=sid)), []
