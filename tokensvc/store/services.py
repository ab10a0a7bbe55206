"""Chat services: the container of roles and users, owned by one account."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, select

from .. import errors
from ..db import first_row, now
from ..paging import Page, PageRequest, fetch_page
from ..sids import is_sid, new_sid
from .channels import delete_service_channels
from .roles import DEFAULT_ROLES, check_role, insert_role
from .tables import services

NOTIFICATION_KINDS = ("new_message", "added_to_channel", "removed_from_channel", "invited_to_channel")
# Twilio's documented defaults (reference schema: channel_members 250, user_channels 100).
DEFAULT_LIMITS = {"channel_members": 250, "user_channels": 100}
DEFAULT_MEDIA = {"size_limit_mb": 150, "compatibility_message": None}


def default_notifications() -> dict[str, Any]:
    notes: dict[str, Any] = {kind: {"enabled": False} for kind in NOTIFICATION_KINDS}
    notes["log_enabled"] = False
    return notes


def create_service(conn: Connection, *, account_sid: str, friendly_name: str) -> Mapping[str, Any]:
    """A new service with Twilio's four default roles; `service user` is the default user role."""
    sid = new_sid("IS")
    ts = now()
    conn.execute(services.insert().values(
        sid=sid, account_sid=account_sid, friendly_name=friendly_name,
        read_status_enabled=True, reachability_enabled=False, typing_indicator_timeout=5,
        consumption_report_interval=10, webhook_method="POST", pre_webhook_retry_count=0,
        post_webhook_retry_count=0, webhook_filters="[]", limits=json.dumps(DEFAULT_LIMITS),
        notifications=json.dumps(default_notifications()), media=json.dumps(DEFAULT_MEDIA),
        date_created=ts, date_updated=ts))
    made = {name: insert_role(conn, account_sid=account_sid, service_sid=sid, friendly_name=name,
                              type=type, permissions=list(perms))["sid"]
            for name, type, perms in DEFAULT_ROLES}
    conn.execute(services.update().where(services.c.sid == sid).values(
        default_service_role_sid=made["service user"],
        default_channel_role_sid=made["channel user"],
        default_channel_creator_role_sid=made["channel admin"]))
    return get_service(conn, account_sid=account_sid, sid=sid)


_BY_SID = select(services).where(services.c.sid == bindparam("sid"))


def get_service(conn: Connection, *, account_sid: str, sid: str) -> Mapping[str, Any]:
    """The account's service, or 404 (also for another account's service)."""
    if not is_sid("IS", sid):
        raise errors.not_found()
    row = first_row(conn.execute(_BY_SID, {"sid": sid}))
    if row is None or row["account_sid"] != account_sid:
        raise errors.not_found()
    return row


def find_service(conn: Connection, sid: str) -> dict[str, Any] | None:
    """A service by SID whatever its account (token verification, the CLI), or None; anything
    but a service SID is None without a query (a path segment may hold anything, a NUL included).
    A plain dict, so a cache may keep it past the connection."""
    if not is_sid("IS", sid):
        return None
    row = conn.execute(_BY_SID, {"sid": sid}).mappings().first()
    return dict(row) if row else None


def list_services(conn: Connection, *, account_sid: str, req: PageRequest) -> Page:
    return fetch_page(conn, select(services).where(services.c.account_sid == account_sid), services.c.id, req)


def update_service(conn: Connection, *, account_sid: str, sid: str, changes: dict[str, Any]) -> Mapping[str, Any]:
    """Apply parsed changes. `notifications`, `limits` and `media` hold partial objects that are
    merged into the stored ones; default role SIDs must name roles of the right type."""
    svc = get_service(conn, account_sid=account_sid, sid=sid)
    values: dict[str, Any] = {}
    for param, column, type in (("DefaultServiceRoleSid", "default_service_role_sid", "deployment"),
                                ("DefaultChannelRoleSid", "default_channel_role_sid", "channel"),
                                ("DefaultChannelCreatorRoleSid", "default_channel_creator_role_sid", "channel")):
        if column in changes:
            values[column] = check_role(conn, service_sid=sid, role_sid=changes[column], type=type, param=param)
    for column in ("notifications", "limits", "media"):
        if column in changes:
            merged = json.loads(svc[column])
            for key, value in changes[column].items():
                if isinstance(value, dict):
                    merged.setdefault(key, {}).update(value)
                else:
                    merged[key] = value
            values[column] = json.dumps(merged)
    if "webhook_filters" in changes:
        values["webhook_filters"] = json.dumps(changes["webhook_filters"])
    for column in ("friendly_name", "read_status_enabled", "reachability_enabled", "typing_indicator_timeout",
                   "consumption_report_interval", "pre_webhook_url", "post_webhook_url", "webhook_method",
                   "pre_webhook_retry_count", "post_webhook_retry_count"):
        if column in changes:
            values[column] = changes[column]
    if values:
        values["date_updated"] = now()
        conn.execute(services.update().where(services.c.sid == sid).values(**values))
        return get_service(conn, account_sid=account_sid, sid=sid)
    return svc


def delete_service(conn: Connection, *, account_sid: str, sid: str) -> None:
    """Delete the service; its roles, users and connections go with it (foreign-key cascade)."""
    get_service(conn, account_sid=account_sid, sid=sid)
    delete_service_channels(conn, service_sid=sid)  # SPEC §8: its channels, members and invites
    if not conn.execute(services.delete().where(services.c.sid == sid)).rowcount:
        raise errors.not_found()  # a concurrent request deleted it after we read it
