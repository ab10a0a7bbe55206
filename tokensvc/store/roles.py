"""Roles of a service: what users (deployment roles) and members (channel roles) may do."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from .. import errors
from ..db import first_row, is_foreign_key_violation, now
from ..paging import Page, PageRequest, fetch_page
from ..sids import is_sid, new_sid
from .members import role_in_use as member_role_in_use
from .tables import roles, services, users

ROLE_TYPES = ("deployment", "channel")
_PERMISSION = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")

# Twilio's documented defaults for a new Chat service.
DEFAULT_ROLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("service admin", "deployment", (
        "addMember", "createChannel", "deleteAnyMessage", "destroyChannel", "editAnyMessage",
        "editAnyMemberAttributes", "editAnyMessageAttributes", "editAnyUserInfo", "editChannelAttributes",
        "editChannelName", "inviteMember", "joinChannel", "removeMember")),
    ("service user", "deployment", ("createChannel", "editOwnUserInfo", "joinChannel")),
    ("channel admin", "channel", (
        "addMember", "deleteAnyMessage", "destroyChannel", "editAnyMessage", "editAnyMessageAttributes",
        "editChannelAttributes", "editChannelName", "inviteMember", "leaveChannel", "removeMember",
        "sendMediaMessage", "sendMessage")),
    ("channel user", "channel", (
        "deleteOwnMessage", "editOwnMemberAttributes", "editOwnMessage", "editOwnMessageAttributes",
        "inviteMember", "leaveChannel", "sendMediaMessage", "sendMessage")),
)


def validate_permissions(values: list[str]) -> list[str]:
    for value in values:
        if not _PERMISSION.fullmatch(value):
            raise errors.invalid_param("Permission", f"{value[:64]!r} is not a permission name")
    return list(dict.fromkeys(values))  # repeated values count once, first order kept


def insert_role(conn: Connection, *, account_sid: str, service_sid: str, friendly_name: str,
                type: str, permissions: list[str]) -> dict[str, Any]:
    ts = now()
    row = {
        "sid": new_sid("RL"), "account_sid": account_sid, "service_sid": service_sid,
        "friendly_name": friendly_name, "type": type, "permissions": json.dumps(permissions),
        "date_created": ts, "date_updated": ts,
    }
    conn.execute(roles.insert().values(**row))
    return row


def create_role(conn: Connection, *, service: Mapping[str, Any], friendly_name: str, type: str,
                permissions: list[str]) -> dict[str, Any]:
    """A new role in the service."""
    if type not in ROLE_TYPES:
        raise errors.invalid_param("Type", "must be deployment or channel")
    try:
        return insert_role(conn, account_sid=service["account_sid"], service_sid=service["sid"],
                           friendly_name=friendly_name, type=type, permissions=validate_permissions(permissions))
    except IntegrityError as exc:
        if is_foreign_key_violation(exc):  # a concurrent request deleted the service
            raise errors.not_found() from None
        raise


def get_role(conn: Connection, *, service_sid: str, sid: str) -> Mapping[str, Any]:
    if not is_sid("RL", sid):
        raise errors.not_found()
    row = first_row(conn.execute(select(roles).where(roles.c.sid == sid, roles.c.service_sid == service_sid)))
    if row is None:
        raise errors.not_found()
    return row


def role_permissions(conn: Connection, *, service_sid: str, role_sid: str) -> frozenset[str]:
    """The permissions of a role (empty if it no longer exists)."""
    raw = conn.execute(select(roles.c.permissions).where(roles.c.sid == role_sid,
                                                         roles.c.service_sid == service_sid)).scalar()
    return frozenset(json.loads(raw)) if raw else frozenset()


def check_role(conn: Connection, *, service_sid: str, role_sid: str, type: str, param: str) -> str:
    """role_sid when it names a role of that type in the service; 50102 otherwise."""
    if not is_sid("RL", role_sid):
        raise errors.invalid_role(param)
    # FOR KEY SHARE (PostgreSQL; SQLite serializes writers anyway): the role cannot be deleted
    # until the reference this check precedes has committed, and a delete that got there first
    # makes the role missing here (50102) rather than a foreign-key error at the write.
    found = conn.execute(select(roles.c.type).where(roles.c.sid == role_sid, roles.c.service_sid == service_sid)
                         .with_for_update(read=True, key_share=True)).scalar()
    if found != type:
        raise errors.invalid_role(param)
    return role_sid


def role_named(conn: Connection, *, service_sid: str, value: str, type: str = "deployment",
               param: str = "RoleSid") -> str:
    """A role given by SID or by friendly name (the CLI: `--role`, an import's role column): a SID
    as given (check_role decides where it is written), a name the SID of the one role of that type
    that has it; 50102 when none or several have it."""
    if is_sid("RL", value):
        return value
    sids = conn.execute(select(roles.c.sid).where(roles.c.service_sid == service_sid, roles.c.type == type,
                                                  roles.c.friendly_name == value).limit(2)).scalars().all()
    if len(sids) != 1:
        raise errors.invalid_role(param)
    return str(sids[0])


def list_roles(conn: Connection, *, service_sid: str, req: PageRequest) -> Page:
    return fetch_page(conn, select(roles).where(roles.c.service_sid == service_sid), roles.c.id, req)


def update_role(conn: Connection, *, service_sid: str, sid: str, permissions: list[str] | None) -> Mapping[str, Any]:
    """Replace the permission set (an update without Permission changes nothing)."""
    role = get_role(conn, service_sid=service_sid, sid=sid)
    if permissions is None:
        return role
    conn.execute(roles.update().where(roles.c.sid == sid).values(
        permissions=json.dumps(validate_permissions(permissions)), date_updated=now()))
    return get_role(conn, service_sid=service_sid, sid=sid)


def delete_role(conn: Connection, *, service_sid: str, sid: str) -> None:
    """Delete a role that no user holds and the service does not use as a default."""
    get_role(conn, service_sid=service_sid, sid=sid)
    svc = conn.execute(select(services).where(services.c.sid == service_sid)).mappings().one()
    in_use = sid in (svc["default_service_role_sid"], svc["default_channel_role_sid"],
                     svc["default_channel_creator_role_sid"])
    if in_use or conn.execute(select(users.c.id).where(users.c.role_sid == sid).limit(1)).first():
        raise errors.role_in_use()
    if member_role_in_use(conn, role_sid=sid):  # members and invites hold channel roles (SPEC §8)
        raise errors.role_in_use()
    try:
        deleted = conn.execute(roles.delete().where(roles.c.sid == sid)).rowcount
    except IntegrityError as exc:
        # A user or a service default that took the role meanwhile (PostgreSQL): the foreign
        # key keeps the role, and the answer is the same as when the check above saw it.
        if is_foreign_key_violation(exc):
            raise errors.role_in_use() from None
        raise
    if not deleted:
        raise errors.not_found()  # a concurrent request deleted it after we read it
