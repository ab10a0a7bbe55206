"""Users (SPEC §3, §5, §11): provisioning on first encounter, and the admin's create/update/delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from .. import errors, validation
from ..auth import Principal
from ..context import Context
from ..paging import Page, PageRequest
from ..sids import is_sid
from ..store import kicks, outbox
from ..store.outbox import API, Origin, sdk
from ..store.provision import ensure_token_user, ensure_user
from ..store.roles import role_permissions
from ..store.services import get_service
from ..store.users import NO_FILTERS, Unset, UserFilters, get_user, is_online
from ..store.users import create_user as store_create_user
from ..store.users import delete_user as store_delete_user
from ..store.users import list_users as store_list_users
from ..store.users import update_user as store_update_user
from ..tokens import Verified
from ..webhooks.pre import wants as pre_wants
from .events import Event, UserAdded, UserRemoved, UserUpdated

Result = tuple[Any, list[Event]]


def pre_user_add(c: Context, service: Mapping[str, Any], identity: str, origin: Origin,
                 given: Mapping[str, Any] | None = None) -> Callable[[], Awaitable[Mapping[str, Any]]] | None:
    """The question to the service's onUserAdd hook before `identity` is provisioned, or None when
    it has none (SPEC §10: 403 50056 / 504 50076 refuse, nothing written)."""
    hooks = c.pre_events
    if hooks is None or not pre_wants(service, "onUserAdd"):
        return None
    return lambda: hooks.user_add(service, identity, origin, given)


async def pre_wanted(c: Context, *, service_sid: str, event_type: str) -> bool:
    """Whether the service has a pre-event hook for `event_type` (to skip a read that only the
    question needs)."""
    svc = await c.auth.service(service_sid)
    return c.pre_events is not None and svc is not None and pre_wants(svc, event_type)


async def pre_action(c: Context, *, origin: Origin, service_sid: str, event_type: str,
                     resource: Mapping[str, Any]) -> dict[str, Any]:
    """A Chat pre-event before a client-token action (SPEC §10: never for REST): the fields its
    hook sets, {} when none fires; its refusal (403 50056 / 504 50076) is raised before anything
    is written."""
    hooks = c.pre_events
    if hooks is None or origin.source != "SDK":
        return {}
    svc = await c.auth.service(service_sid)
    if svc is None or not pre_wants(svc, event_type):
        return {}
    params = {name: str(value) for name, value in resource.items() if value is not None}
    return await hooks.action(svc, event_type, params, origin)


async def provision_user(c: Context, *, service: Mapping[str, Any], identity: str,
                         token: Verified | None = None) -> tuple[tuple[Mapping[str, Any], bool], list[Event]]:
    """The identity's user, created with the service's default role on first encounter. With the
    `token` the caller presented, not when that token predates the identity's deletion (401 20101,
    SPEC §11); without one (the token endpoint: the backend asks anew) always."""
    ask = pre_user_add(c, service, identity, API if token is None else sdk(identity))
    if token is None:
        user, created = await ensure_user(c.db, service=service, identity=identity, ask=ask)
    else:
        graves = c.tombstones
        user, created = await ensure_token_user(c.db, service=service, identity=identity,
                                                issued_at=graves.issued_at(token), graves=graves, ask=ask)
    return (user, created), [UserAdded(user)] if created else []


async def create_user(c: Context, *, origin: Origin = API,
                      account_sid: str, service_sid: str, identity: str, role_sid: str | None,
                      attributes: str | None, friendly_name: str | None) -> Result:
    """POST /Users: a new user of the account's service (409 50201 when the identity exists)."""

    given = {"role_sid": role_sid, "attributes": attributes, "friendly_name": friendly_name}
    svc_now = await c.auth.service(service_sid)
    if svc_now is not None and svc_now["account_sid"] == account_sid:
        ask = pre_user_add(c, svc_now, identity, origin, given)
        if ask is not None:
            given.update(await ask())  # the hook's fields, validated as the caller's are

    def create(conn: Any) -> Any:
        svc = get_service(conn, account_sid=account_sid, sid=service_sid)
        # POST /Users provisions a user: its onUserAdded fires whatever X-Twilio-Webhook-Enabled says
        return store_create_user(conn, service=svc, identity=identity, role_sid=given["role_sid"],
                                 attributes=given["attributes"], friendly_name=given["friendly_name"],
                                 origin=Origin(origin.source, origin.client_identity))

    user = await c.db.run(create)
    return user, [UserAdded(user, first_encounter=False)]


def _check_client_update(conn: Any, caller: Mapping[str, Any], service_sid: str, key: str,
                         changes: Mapping[str, Any]) -> None:
    """A client may edit FriendlyName/Attributes of itself (editOwnUserInfo) or of anyone
    (editAnyUserInfo); never a role (SPEC §5)."""
    if "role_sid" in changes:
        raise errors.forbidden("A client cannot change roles")
    target = get_user(conn, service_sid=service_sid, key=key)
    perms = role_permissions(conn, service_sid=service_sid, role_sid=caller["role_sid"])
    is_self = target["sid"] == caller["sid"]
    if "editAnyUserInfo" in perms or (is_self and "editOwnUserInfo" in perms):
        return
    raise errors.forbidden()


async def update_user(c: Context, *, principal: Principal, origin: Origin = API,
                      caller: Mapping[str, Any] | None, service_sid: str,
                      key: str, changes: Mapping[str, Any]) -> Result:
    """Change role, attributes or friendly name (`changes` holds those given); a client token's
    holder (`caller`) only within its role's permissions."""

    changes = {**changes, **await pre_action(c, origin=origin, service_sid=service_sid, event_type="onUserUpdate",
                                             resource={"Identity": key, "FriendlyName": changes.get("friendly_name"),
                                                       "Attributes": changes.get("attributes")})}

    def update(conn: Any) -> Any:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        if principal.is_client:
            if caller is None:
                raise errors.forbidden()
            _check_client_update(conn, caller, service_sid, key, changes)
        user = store_update_user(conn, service_sid=service_sid, key=key,
                                 role_sid=changes.get("role_sid", Unset),
                                 attributes=changes.get("attributes", Unset),
                                 friendly_name=changes.get("friendly_name", Unset))
        if changes:
            outbox.record(conn, svc, "onUserUpdated", [user], origin)
        return user

    user = await c.db.run(update)
    return user, [UserUpdated(user)] if changes else []


async def fetch_user(c: Context, *, account_sid: str, service_sid: str,
                     key: str) -> tuple[Mapping[str, Any], bool | None, bool | None]:
    """(user, is_online, is_notifiable) of GET /Users/{key}: both null unless the service has
    reachability enabled (SPEC §3, §9); 404 for another account's service."""
    svc = await c.auth.service(service_sid)  # cached; this process's updates clear it at once
    if svc is None or svc["account_sid"] != account_sid:
        raise errors.not_found()
    timeout = c.settings.presence_timeout

    def fetch(conn: Any) -> tuple[Mapping[str, Any], bool | None]:
        user = get_user(conn, service_sid=service_sid, key=key)
        return user, is_online(conn, user=user, timeout=timeout) if svc["reachability_enabled"] else None

    user, online = await c.db.read(fetch)
    # users.notifiable is kept with the bindings (store/push.py), null until a first one
    return user, online, user["notifiable"] if svc["reachability_enabled"] else None


async def delete_user(c: Context, *, origin: Origin = API, account_sid: str, service_sid: str, key: str) -> Result:
    """Delete the user, leaving a tombstone of its identity (SPEC §11); its sessions close."""
    graves = c.tombstones

    def remove(conn: Any) -> str:
        svc = get_service(conn, account_sid=account_sid, sid=service_sid)
        user_sid = store_delete_user(conn, service_sid=service_sid, key=key, graves=graves)
        kicks.record(conn, kicks.USER, user_sid, service_sid=service_sid)  # its sessions, on every replica
        # UserSid only: the deleted identity's PII is not copied into the outbox (SPEC §3)
        outbox.forget_failed(conn, resource_sid=user_sid)
        outbox.record(conn, svc, "onUserRemoved", [{"sid": user_sid, "service_sid": service_sid}], origin)
        return user_sid

    user_sid = await c.db.run(remove)
    return user_sid, [UserRemoved(service_sid, user_sid)]


def _filter_text(name: str, value: str) -> str:
    if "\x00" in value:
        raise errors.invalid_param(name, "must not contain NUL characters")
    if not validation.is_text(value):
        raise errors.invalid_param(name, "must be Unicode text")
    return value


def user_filters(*, identities: Iterable[str] = (), identity_prefix: str | None = None,
                 role_sid: str | None = None, updated_after: str | None = None) -> UserFilters:
    """The Users list filters of SPEC §11 from their text (query parameters, CLI options, the
    console's search), or 400 20001 naming the one that is malformed."""
    exact = tuple(_filter_text("Identity", value) for value in identities)
    if identity_prefix is not None:
        _filter_text("IdentityPrefix", identity_prefix)
        if identity_prefix == "":
            raise errors.invalid_param("IdentityPrefix", "must not be empty")
        if len(identity_prefix) > validation.MAX_IDENTITY:
            raise errors.invalid_param("IdentityPrefix", f"must be at most {validation.MAX_IDENTITY} characters, "
                                                         "as an identity is")
    if role_sid is not None and not is_sid("RL", role_sid):
        raise errors.invalid_param("RoleSid", "must be a Role SID (RL and 32 hexadecimal digits)")
    after = None
    if updated_after is not None:
        after = validation.iso_date(updated_after, errors.invalid_param(
            "UpdatedAfter", "must be an ISO 8601 date and time, like 2016-03-24T21:05:19Z"))
    return UserFilters(exact, identity_prefix, role_sid, after)


async def list_users(c: Context, *, principal: Principal, service_sid: str, req: PageRequest,
                     filters: UserFilters = NO_FILTERS) -> Page:
    """A page of the service's users (SPEC §3), filtered (§11: Basic callers only, a client token
    403 20403); 404 when the service is not the caller's account's. `req`'s cursor is of the
    kind `filters.order` names."""
    if filters and principal.is_client:
        raise errors.forbidden("Users list filters are for Basic-authenticated callers")

    def listing(conn: Any) -> Page:
        get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        return store_list_users(conn, service_sid=service_sid, req=req, filters=filters)

    # One index range is a page's worth of rows, read inline; a combination may scan (off the loop).
    return await (c.db.scan if filters.may_scan else c.db.read)(listing)

