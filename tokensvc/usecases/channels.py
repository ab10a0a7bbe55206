"""Channels (SPEC §8): create, update, delete, and who may see and do what in them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from .. import errors
from ..auth import Principal
from ..context import Context
from ..paging import Page, PageRequest
from ..store import channels as store
from ..store import outbox
from ..store.members import membership_of
from ..store.outbox import API, Origin
from ..store.roles import role_permissions
from ..store.services import get_service
from ..store.users import get_user
from .events import ChannelAdded, ChannelDestroyed, ChannelUpdated, Event
from .users import pre_action

T = TypeVar("T")
Result = tuple[Any, list[Event]]
_RETRIES = 3
BASIC_ONLY = ("date_created", "date_updated", "created_by")  # SPEC §8: Date*, CreatedBy


async def transaction(c: Context, fn: Callable[[Connection], T]) -> T:
    """fn in one writing transaction, run again when PostgreSQL chose it as a deadlock's victim
    (two deletes that lock a user and its channels in opposite orders; store/members.py)."""
    for attempt in range(1, _RETRIES + 1):
        try:
            return await c.db.run(fn)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in ("40P01", "40001") or attempt == _RETRIES:
                raise
    raise AssertionError("unreachable")


def caller_permissions(conn: Connection, *, service_sid: str, caller: Mapping[str, Any],
                       channel: Mapping[str, Any] | None = None) -> frozenset[str]:
    """A client's permissions: its service role's and, inside a channel it is a member of, its
    member role's (SPEC §8)."""
    user = get_user(conn, service_sid=service_sid, key=caller["sid"])
    perms = role_permissions(conn, service_sid=service_sid, role_sid=user["role_sid"])
    if channel is not None:
        row = membership_of(conn, channel_sid=channel["sid"], user_sid=user["sid"])
        if row is not None and row["status"] == "joined":
            perms |= role_permissions(conn, service_sid=service_sid, role_sid=row["role_sid"])
    return perms


def require(perms: frozenset[str], *needed: str) -> None:
    """403 20403 unless every permission in `needed` is held."""
    if not set(needed) <= perms:
        raise errors.forbidden()


def client_user(principal: Principal, caller: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The token holder's user for a client, None for Basic credentials."""
    if not principal.is_client:
        return None
    if caller is None:
        raise errors.forbidden()
    return caller


def check_visible(conn: Connection, *, channel: Mapping[str, Any], caller: Mapping[str, Any] | None) -> None:
    """A client sees public channels and the private ones it is a member of or invited to."""
    if caller is None or channel["type"] == "public":
        return
    if membership_of(conn, channel_sid=channel["sid"], user_sid=caller["sid"]) is None:
        raise errors.forbidden()


def visible_channel(conn: Connection, *, account_sid: str, service_sid: str, channel_key: str,
                    caller: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The account's channel by SID or unique name, if the caller may see it (check_visible)."""
    get_service(conn, account_sid=account_sid, sid=service_sid)
    channel = store.get_channel(conn, service_sid=service_sid, key=channel_key)
    check_visible(conn, channel=channel, caller=caller)
    return channel


async def get_channel(c: Context, *, principal: Principal, caller: Mapping[str, Any] | None, service_sid: str,
                      channel_key: str) -> Mapping[str, Any]:
    client = client_user(principal, caller)
    return await c.db.read(lambda conn: visible_channel(conn, account_sid=principal.account_sid,
                                                        service_sid=service_sid, channel_key=channel_key,
                                                        caller=client))


async def list_channels(c: Context, *, principal: Principal, caller: Mapping[str, Any] | None, service_sid: str,
                        types: list[str], req: PageRequest) -> Page:
    """One page of the service's channels of those types; a client's: the public ones and the
    private ones it belongs to."""
    client = client_user(principal, caller)
    member_of = client["sid"] if client is not None else None

    def read(conn: Connection) -> Page:
        get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        return store.list_channels(conn, service_sid=service_sid, types=sorted(set(types)), req=req,
                                   member_of=member_of)

    return await c.db.read(read)


async def create_channel(c: Context, *, principal: Principal, origin: Origin = API,
                         caller: Mapping[str, Any] | None, service_sid: str,
                         values: Mapping[str, Any]) -> Result:
    """POST /Channels: `values` holds the parsed parameters given (friendly_name, unique_name,
    attributes, type, date_created, date_updated, created_by)."""
    client = client_user(principal, caller)
    values = {**values, **await pre_action(c, origin=origin, service_sid=service_sid, event_type="onChannelAdd",
                                           resource={"FriendlyName": values.get("friendly_name"),
                                                     "UniqueName": values.get("unique_name"),
                                                     "Attributes": values.get("attributes"),
                                                     "ChannelType": values.get("type", "public")})}

    def create(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        created_by = values.get("created_by") or store.SYSTEM
        if client is not None:
            if any(name in values for name in BASIC_ONLY):
                raise errors.forbidden("Date and CreatedBy parameters need account credentials")
            require(caller_permissions(conn, service_sid=service_sid, caller=client), "createChannel")
            created_by = client["identity"]
        made = store.insert_channel(conn, service=svc, friendly_name=values.get("friendly_name"),
                                    unique_name=values.get("unique_name"), attributes=values.get("attributes"),
                                    type=values.get("type", "public"), created_by=created_by,
                                    date_created=values.get("date_created"), date_updated=values.get("date_updated"))
        outbox.record(conn, svc, "onChannelAdded", [made], origin)
        return made

    channel = await transaction(c, create)
    return channel, [ChannelAdded(channel)]


async def update_channel(c: Context, *, principal: Principal, origin: Origin = API,
                         caller: Mapping[str, Any] | None, service_sid: str,
                         key: str, values: Mapping[str, Any]) -> Result:
    """POST /Channels/{key}: 400 50347 without a parameter; a client needs editChannelName for
    the names and editChannelAttributes for the attributes."""
    if not values:
        raise errors.nothing_to_update()
    client = client_user(principal, caller)
    values = {**values, **await pre_action(c, origin=origin, service_sid=service_sid, event_type="onChannelUpdate",
                                           resource={"ChannelSid": key, "FriendlyName": values.get("friendly_name"),
                                                     "UniqueName": values.get("unique_name"),
                                                     "Attributes": values.get("attributes")})}

    def update(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        channel = store.get_channel(conn, service_sid=service_sid, key=key, lock=True)
        if client is not None:
            if any(name in values for name in BASIC_ONLY):
                raise errors.forbidden("Date and CreatedBy parameters need account credentials")
            check_visible(conn, channel=channel, caller=client)
            perms = caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel)
            if "friendly_name" in values or "unique_name" in values:
                require(perms, "editChannelName")
            if "attributes" in values:
                require(perms, "editChannelAttributes")
        changed = store.update_channel(conn, channel=channel, values=values)
        outbox.record(conn, svc, "onChannelUpdated", [changed], origin)
        return changed

    channel = await transaction(c, update)
    return channel, [ChannelUpdated(channel)]


async def delete_channel(c: Context, *, principal: Principal, origin: Origin = API,
                         caller: Mapping[str, Any] | None, service_sid: str,
                         key: str) -> Result:
    """DELETE /Channels/{key}: its members and invites go, every count follows."""
    client = client_user(principal, caller)
    await pre_action(c, origin=origin, service_sid=service_sid, event_type="onChannelDestroy",
                     resource={"ChannelSid": key})

    def remove(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        channel = store.get_channel(conn, service_sid=service_sid, key=key, lock=True)
        if client is not None:
            check_visible(conn, channel=channel, caller=client)
            require(caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel),
                    "destroyChannel")
        store.delete_channel(conn, channel=channel)
        outbox.record(conn, svc, "onChannelDestroyed", [channel], origin)
        return channel

    channel = await transaction(c, remove)
    return channel["sid"], [ChannelDestroyed(channel)]
