"""Members, Invites and User Channels (SPEC §8). Adding an identity as a member is the third
provisioning path: the user is got-or-created by the same code as the token endpoint's, inside
the member insert's transaction, so a refusal (50404, 50403, 50208) leaves no user behind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from .. import errors
from ..auth import Principal
from ..context import Context
from ..paging import Page, PageRequest
from ..store import member_batch, outbox
from ..store import members as store
from ..store.channels import SYSTEM, get_channel
from ..store.invites import create_invite as store_create_invite
from ..store.invites import get_invite
from ..store.outbox import API, Origin
from ..store.roles import check_role
from ..store.services import get_service
from ..store.users import find_by_identity, first_encounter, get_user
from .channels import BASIC_ONLY, caller_permissions, check_visible, client_user, require, transaction, visible_channel
from .events import Event, MemberAdded, MemberRemoved, MemberUpdated, UserAdded
from .users import pre_action, pre_user_add, pre_wanted

Result = tuple[Any, list[Event]]


def channel_role(conn: Connection, *, service_sid: str, role_sid: str) -> str:
    """role_sid when it names a channel role of the service; 400 50101 otherwise."""
    try:
        return check_role(conn, service_sid=service_sid, role_sid=role_sid, type="channel", param="RoleSid")
    except errors.TwilioError:
        raise errors.invalid_channel_role() from None


def _client_basic_only(values: Mapping[str, Any]) -> None:
    if any(name in values for name in (*BASIC_ONLY, "role_sid")):
        raise errors.forbidden("Date and RoleSid parameters need account credentials")


async def _ask_user_add(c: Context, account_sid: str, service_sid: str, identity: str,
                        origin: Origin) -> Mapping[str, Any] | None:
    """The service's onUserAdd answer when the member's identity is new (SPEC §10), before the
    transaction: a refusal writes nothing."""
    svc = await c.auth.service(service_sid)
    if svc is None or svc["account_sid"] != account_sid:
        return None  # the transaction answers 404
    ask = pre_user_add(c, svc, identity, origin)
    if ask is None:
        return None
    if await c.db.read(lambda conn: find_by_identity(conn, service_sid=service_sid, identity=identity)) is not None:
        return None
    return await ask()


async def add_member(c: Context, *, principal: Principal, origin: Origin = API,
                     caller: Mapping[str, Any] | None, service_sid: str,
                     channel_key: str, identity: str, values: Mapping[str, Any]) -> Result:
    """POST /Channels/{CH}/Members: one transaction locks the channel, gets or creates the
    identity's user, checks membership and limits, inserts the member and moves both counts.
    A client adds itself with joinChannel (a private channel only when invited), others with
    addMember."""
    client = client_user(principal, caller)
    values = {**values, **await pre_action(c, origin=origin, service_sid=service_sid, event_type="onMemberAdd",
                                           resource={"ChannelSid": channel_key, "Identity": identity,
                                                     "RoleSid": values.get("role_sid"),
                                                     "Attributes": values.get("attributes")})}
    fields = await _ask_user_add(c, principal.account_sid, service_sid, identity, origin)
    if c.db.apg is not None and client is None and values.get("role_sid") is None and not fields:
        return await _add_member_async(c, principal=principal, origin=origin, service_sid=service_sid,
                                       channel_key=channel_key, identity=identity, values=values)

    def add(conn: Connection) -> tuple[Mapping[str, Any], Mapping[str, Any], bool]:
        # The service and the channel in one statement (the channel locked), then the identity's
        # user and its row in the channel in one more; get_or_create's insert only when new.
        svc, channel = store.join_target(conn, account_sid=principal.account_sid, service_sid=service_sid,
                                         channel_key=channel_key)
        role_sid = values.get("role_sid")
        if role_sid is not None:
            role_sid = channel_role(conn, service_sid=service_sid, role_sid=role_sid)
        if client is not None:
            _client_basic_only(values)
            perms = caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel)
            if identity == client["identity"]:
                require(perms, "joinChannel")
                invited = store.membership_of(conn, channel_sid=channel["sid"], user_sid=client["sid"])
                if channel["type"] == "private" and invited is None:
                    raise errors.forbidden("A private channel is joined by invitation")
            else:
                check_visible(conn, channel=channel, caller=client)
                require(perms, "addMember")
        user, found = store.joiner(conn, channel=channel, identity=identity)
        created = False
        if user is None:
            # onUserAdded fires for provisioning whoever asks; onMemberAdded by the caller's rule (SPEC §10)
            user, created = first_encounter(conn, svc, identity, Origin(origin.source, origin.client_identity),
                                            fields)
        member = store.join(conn, service=svc, channel=channel, user=user, role_sid=role_sid, values=values,
                            found=found)
        outbox.record(conn, svc, "onMemberAdded", [member], origin)
        return member, user, created

    member, user, created = await transaction(c, add)
    events: list[Event] = [UserAdded(user)] if created else []
    return member, [*events, MemberAdded(member)]


async def _add_member_async(c: Context, *, principal: Principal, origin: Origin, service_sid: str, channel_key: str,
                            identity: str, values: Mapping[str, Any]) -> Result:
    """add_member with account credentials and no RoleSid on PostgreSQL: batched with the
    concurrent ones in one transaction on the async pool (store/member_batch.py), by the same
    rules (store.plan_join), statements (store.PG_JOIN) and get-or-create as the sync path."""
    assert c.db.apg is not None
    member, user, created = await member_batch.add_member(c.db.apg, member_batch.Join(
        account_sid=principal.account_sid, service_sid=service_sid, channel_key=channel_key, identity=identity,
        values=values, origin=origin))
    events: list[Event] = [UserAdded(user)] if created else []
    return member, [*events, MemberAdded(member)]


async def update_member(c: Context, *, principal: Principal, origin: Origin = API,
                        caller: Mapping[str, Any] | None, service_sid: str,
                        channel_key: str, key: str, values: Mapping[str, Any]) -> Result:
    """POST /Channels/{CH}/Members/{MB}: a client edits attributes with editOwnMemberAttributes
    (itself) or editAnyMemberAttributes, and its own consumption fields."""
    client = client_user(principal, caller)
    values = {**values, **await pre_action(c, origin=origin, service_sid=service_sid, event_type="onMemberUpdate",
                                           resource={"ChannelSid": channel_key, "MemberSid": key,
                                                     "RoleSid": values.get("role_sid"),
                                                     "Attributes": values.get("attributes")})}

    def update(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        channel = get_channel(conn, service_sid=service_sid, key=channel_key)
        member = store.get_member(conn, channel=channel, key=key)
        changes = dict(values)
        if "role_sid" in changes:
            changes["role_sid"] = channel_role(conn, service_sid=service_sid, role_sid=changes["role_sid"])
        if client is not None:
            _client_basic_only(values)
            is_self = member["user_sid"] == client["sid"]
            perms = caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel)
            if "attributes" in values and not ("editAnyMemberAttributes" in perms
                                               or (is_self and "editOwnMemberAttributes" in perms)):
                raise errors.forbidden()
            if not is_self and ("last_consumed_message_index" in values or "last_consumption_timestamp" in values):
                raise errors.forbidden()
        if not changes:
            return member
        changed = store.update_row(conn, row=member, values=changes)
        outbox.record(conn, svc, "onMemberUpdated", [changed], origin)
        return changed

    member = await transaction(c, update)
    return member, [MemberUpdated(member)] if values else []


async def remove_member(c: Context, *, principal: Principal, origin: Origin = API,
                        caller: Mapping[str, Any] | None, service_sid: str,
                        channel_key: str, key: str) -> Result:
    """DELETE /Channels/{CH}/Members/{MB}: a client leaves with leaveChannel, removes others
    with removeMember."""
    client = client_user(principal, caller)
    await pre_action(c, origin=origin, service_sid=service_sid, event_type="onMemberRemove",
                     resource={"ChannelSid": channel_key, "MemberSid": key})

    def remove(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        channel = get_channel(conn, service_sid=service_sid, key=channel_key, lock=True)
        member = store.get_member(conn, channel=channel, key=key)
        if client is not None:
            perms = caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel)
            require(perms, "leaveChannel" if member["user_sid"] == client["sid"] else "removeMember")
        store.leave(conn, row=member)
        outbox.record(conn, svc, "onMemberRemoved", [member], origin)
        return member

    member = await transaction(c, remove)
    return member["sid"], [MemberRemoved(member)]


# ---- Invites


async def create_invite(c: Context, *, principal: Principal, caller: Mapping[str, Any] | None, service_sid: str,
                        channel_key: str, identity: str, role_sid: str | None) -> Result:
    """POST /Channels/{CH}/Invites: invites never provision (404 20404 for an unknown identity)."""
    client = client_user(principal, caller)

    def invite(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        channel = get_channel(conn, service_sid=service_sid, key=channel_key, lock=True)
        role = channel_role(conn, service_sid=service_sid, role_sid=role_sid) if role_sid is not None else None
        if client is not None:
            if role_sid is not None:
                raise errors.forbidden("RoleSid needs account credentials")
            check_visible(conn, channel=channel, caller=client)
            require(caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel),
                    "inviteMember")
        user = find_by_identity(conn, service_sid=service_sid, identity=identity)
        if user is None:
            raise errors.not_found("No user has this identity: invites never create users")
        return store_create_invite(conn, service=svc, channel=channel, user=user, role_sid=role,
                                   created_by=client["identity"] if client is not None else SYSTEM)

    return await transaction(c, invite), []


async def delete_invite(c: Context, *, principal: Principal, caller: Mapping[str, Any] | None, service_sid: str,
                        channel_key: str, key: str) -> Result:
    """DELETE /Channels/{CH}/Invites/{IN}: a client needs removeMember, or is the invitee."""
    client = client_user(principal, caller)

    def remove(conn: Connection) -> str:
        get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        channel = get_channel(conn, service_sid=service_sid, key=channel_key, lock=True)
        invite = get_invite(conn, channel=channel, key=key)
        if client is not None and invite["user_sid"] != client["sid"]:
            require(caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel),
                    "removeMember")
        store.leave(conn, row=invite)
        return str(invite["sid"])

    return await transaction(c, remove), []


# ---- User Channels


async def list_channel_rows(c: Context, *, principal: Principal, caller: Mapping[str, Any] | None, service_sid: str,
                            channel_key: str, status: str, identities: list[str],
                            page_request: Callable[[str], PageRequest]) -> tuple[Mapping[str, Any], Page]:
    """(channel, one page of its members (status store.JOINED) or invites (store.INVITED), of those
    identities when any are given); `page_request(channel_sid)` parses the page asked for."""

    client = client_user(principal, caller)

    def read(conn: Connection) -> tuple[Mapping[str, Any], Page]:
        channel = visible_channel(conn, account_sid=principal.account_sid, service_sid=service_sid,
                                  channel_key=channel_key, caller=client)
        return channel, store.list_rows(conn, channel_sid=channel["sid"], status=status, identities=identities,
                                        req=page_request(channel["sid"]))

    return await c.db.read(read)


async def get_member(c: Context, *, principal: Principal, caller: Mapping[str, Any] | None, service_sid: str,
                     channel_key: str, key: str) -> Mapping[str, Any]:
    client = client_user(principal, caller)

    def read(conn: Connection) -> Mapping[str, Any]:
        channel = visible_channel(conn, account_sid=principal.account_sid, service_sid=service_sid,
                                  channel_key=channel_key, caller=client)
        return store.get_member(conn, channel=channel, key=key)

    return await c.db.read(read)


async def get_channel_invite(c: Context, *, principal: Principal, caller: Mapping[str, Any] | None,
                             service_sid: str, channel_key: str, key: str) -> Mapping[str, Any]:
    client = client_user(principal, caller)

    def read(conn: Connection) -> Mapping[str, Any]:
        channel = visible_channel(conn, account_sid=principal.account_sid, service_sid=service_sid,
                                  channel_key=channel_key, caller=client)
        return get_invite(conn, channel=channel, key=key)

    return await c.db.read(read)


def own_user(conn: Connection, *, service_sid: str, user_key: str,
             caller: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The user of /Users/{key}/Channels; a client only its own (403 20403)."""
    user = get_user(conn, service_sid=service_sid, key=user_key)
    if caller is not None and user["sid"] != caller["sid"]:
        raise errors.forbidden("Another user's channels need account credentials")
    return user


async def list_user_channels(c: Context, *, account_sid: str, service_sid: str, user_key: str,
                             caller: Mapping[str, Any] | None,
                             page_request: Callable[[str], PageRequest]) -> tuple[Mapping[str, Any], Page]:
    """(user, one page of its joined and invited channels); `page_request(user_sid)` parses the
    page asked for (its cursors belong to the list of that user's SID); a client only its own."""

    def read(conn: Connection) -> tuple[Mapping[str, Any], Page]:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        user = own_user(conn, service_sid=service_sid, user_key=user_key, caller=caller)
        return user, store.list_user_channels(conn, user_sid=user["sid"], req=page_request(user["sid"]))

    return await c.db.read(read)


async def get_user_channel(c: Context, *, account_sid: str, service_sid: str, user_key: str, channel_key: str,
                           caller: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """One of the user's joined or invited channels; a client only its own."""

    def read(conn: Connection) -> Mapping[str, Any]:
        get_service(conn, account_sid=account_sid, sid=service_sid)
        user = own_user(conn, service_sid=service_sid, user_key=user_key, caller=caller)
        channel = get_channel(conn, service_sid=service_sid, key=channel_key)
        return store.get_user_channel(conn, user_sid=user["sid"], channel_sid=channel["sid"])

    return await c.db.read(read)


async def update_user_channel(c: Context, *, principal: Principal, origin: Origin = API,
                              caller: Mapping[str, Any] | None, service_sid: str, user_key: str, channel_key: str,
                              values: Mapping[str, Any]) -> Result:
    """POST /Users/{US}/Channels/{CH}: notification level and consumption fields."""
    client = client_user(principal, caller)

    def update(conn: Connection) -> Mapping[str, Any]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        user = own_user(conn, service_sid=service_sid, user_key=user_key, caller=client)
        channel = get_channel(conn, service_sid=service_sid, key=channel_key)
        row = store.get_user_channel(conn, user_sid=user["sid"], channel_sid=channel["sid"])
        if not values:
            return row
        changed = store.update_row(conn, row=row, values=values)
        if changed["status"] == store.JOINED:
            outbox.record(conn, svc, "onMemberUpdated", [changed], origin)
        return changed

    row = await transaction(c, update)
    return row, [MemberUpdated(row)] if values and row["status"] == store.JOINED else []


async def delete_user_channel(c: Context, *, principal: Principal, origin: Origin = API,
                              caller: Mapping[str, Any] | None, service_sid: str, user_key: str,
                              channel_key: str) -> Result:
    """DELETE /Users/{US}/Channels/{CH}: leave the channel (a client: leaveChannel), or drop the
    invite. A client leaving asks onMemberRemove first, as a member delete does (SPEC §10)."""
    client = client_user(principal, caller)

    def find(conn: Connection, lock: bool = False) -> tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        user = own_user(conn, service_sid=service_sid, user_key=user_key, caller=client)
        channel = get_channel(conn, service_sid=service_sid, key=channel_key, lock=lock)
        return svc, channel, store.get_user_channel(conn, user_sid=user["sid"], channel_sid=channel["sid"])

    if origin.source == "SDK" and await pre_wanted(c, service_sid=service_sid, event_type="onMemberRemove"):
        _, channel, found = await c.db.read(find)  # an invite dropped is no member removed: nothing to ask
        if found["status"] == store.JOINED:
            await pre_action(c, origin=origin, service_sid=service_sid, event_type="onMemberRemove",
                             resource={"ChannelSid": channel["sid"], "MemberSid": found["sid"]})

    def remove(conn: Connection) -> Mapping[str, Any]:
        svc, channel, row = find(conn, lock=True)
        if client is not None and row["status"] == store.JOINED:
            require(caller_permissions(conn, service_sid=service_sid, caller=client, channel=channel), "leaveChannel")
        store.leave(conn, row=row)
        if row["status"] == store.JOINED:
            outbox.record(conn, svc, "onMemberRemoved", [row], origin)
        return row

    row = await transaction(c, remove)
    return row["sid"], [MemberRemoved(row)] if row["status"] == store.JOINED else []
