"""/v2/Services/{IS}/Channels and everything under one channel (SPEC §8).

A channel's key may be its unique name, which may hold `%2F`: like /Users/{key}, one route takes
the raw path and this module tells the channel from its Members and Invites (each resource with
its own declared methods). Messages and Webhooks are out of scope: 404 20404.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..paging import page_meta, parse_page_request
from ..usecases import channels as channels_uc
from ..usecases.effects import apply
from . import members as members_api
from .common import (
    authenticate,
    base_url,
    ctx,
    empty_response,
    json_response,
    origin,
    page_cursors,
    query_values,
    read_form,
)
from .common import query as query_params
from .render import channel_to_json
from .routing import allow_header, dispatch, method_table

MAX_CREATED_BY = 256


def caller(request: Request) -> Any:
    """The token holder's user (set by authenticate for a client), else None."""
    return getattr(request.state, "user", None)


def _channel_values(form: Any, *, create: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "FriendlyName" in form:
        values["friendly_name"] = validation.friendly_name(form.require("FriendlyName"))
    if "UniqueName" in form:
        name = form.require("UniqueName")
        values["unique_name"] = validation.unique_name(name) if name else None  # empty clears it
    if "Attributes" in form:
        values["attributes"] = validation.attributes(form.require("Attributes"))
    if create and "Type" in form:
        values["type"] = validation.channel_type(form.require("Type"))
    if "DateCreated" in form:
        values["date_created"] = validation.iso_date(form.require("DateCreated"), errors.invalid_date_created())
    if "DateUpdated" in form:
        values["date_updated"] = validation.iso_date(form.require("DateUpdated"), errors.invalid_date_updated())
    if "CreatedBy" in form:
        created_by = form.require("CreatedBy")
        if len(created_by) > MAX_CREATED_BY or not validation.is_text(created_by):
            raise errors.invalid_param("CreatedBy", "must be an identity of at most 256 characters")
        values["created_by"] = created_by
    return values


async def list_(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    explicit = query_values(request).get("Type", [])
    types = explicit or ["public"]  # absent = public, as Twilio documents
    for type_ in types:
        validation.channel_type(type_)
    path = f"/v2/Services/{service_sid}/Channels"
    cursors = page_cursors(request, path)
    req = parse_page_request(query_params(request), cursors)
    page = await channels_uc.list_channels(c, principal=principal, caller=caller(request), service_sid=service_sid,
                                           types=types, req=req)
    base = base_url(request)
    return json_response({"channels": [channel_to_json(r._mapping, base) for r in page.rows],
                          "meta": members_api.with_filters(page_meta(f"{base}{path}", "channels", cursors, req, page),
                                                           "Type", explicit)})


async def create(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    values = _channel_values(await read_form(request), create=True)
    channel, events = await channels_uc.create_channel(c, principal=principal, origin=origin(request, principal),
                                                       caller=caller(request),
                                                       service_sid=service_sid, values=values)
    await apply(c, events)
    return json_response(channel_to_json(channel, base_url(request)), 201)


def _channel_path(request: Request) -> list[str]:
    """The decoded segments after /Channels/ of the raw path (so `%2F` stays in one key)."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    parts = raw.split(b"?", 1)[0].split(b"/")[5:]  # '', v2, Services, {IS}, Channels, …
    if not parts or len(parts) > 3 or not all(parts):
        raise errors.not_found()
    try:
        keys = [unquote_to_bytes(p).decode("utf-8") for p in parts]
    except UnicodeDecodeError:
        raise errors.not_found() from None
    if len(keys) > 1 and keys[1] not in ("Members", "Invites"):
        raise errors.not_found()  # Messages, Webhooks: out of scope (SPEC §8)
    return keys


async def item(request: Request) -> Response:
    """/Channels/{key}, /Channels/{key}/Members[/{key}], /Channels/{key}/Invites[/{key}]."""
    keys = _channel_path(request)
    request.state.channel_key = keys[0]
    if len(keys) == 3:
        request.state.item_key = keys[2]
    return await dispatch(request, _table(keys))


async def fetch(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    channel = await channels_uc.get_channel(ctx(request), principal=principal, caller=caller(request),
                                            service_sid=service_sid, channel_key=request.state.channel_key)
    return json_response(channel_to_json(channel, base_url(request)))


async def update(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    values = _channel_values(await read_form(request), create=False)
    channel, events = await channels_uc.update_channel(c, principal=principal, origin=origin(request, principal),
                                                       caller=caller(request),
                                                       service_sid=service_sid, key=request.state.channel_key,
                                                       values=values)
    await apply(c, events)
    return json_response(channel_to_json(channel, base_url(request)))


async def delete(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    _, events = await channels_uc.delete_channel(c, principal=principal, origin=origin(request, principal),
                                                 caller=caller(request),
                                                 service_sid=service_sid, key=request.state.channel_key)
    await apply(c, events)
    return empty_response()


_CHANNEL = method_table(GET=fetch, POST=update, DELETE=delete)
_MEMBERS = method_table(GET=members_api.list_members, POST=members_api.create_member)
_MEMBER = method_table(GET=members_api.fetch_member, POST=members_api.update_member,
                       DELETE=members_api.delete_member)
_INVITES = method_table(GET=members_api.list_invites, POST=members_api.create_invite)
_INVITE = method_table(GET=members_api.fetch_invite, DELETE=members_api.delete_invite)
ITEM_METHODS = tuple(sorted(set(_CHANNEL) | set(_MEMBERS) | set(_MEMBER) | set(_INVITES) | set(_INVITE)))


def _table(keys: list[str]) -> Any:
    if len(keys) == 1:
        return _CHANNEL
    if keys[1] == "Members":
        return _MEMBERS if len(keys) == 2 else _MEMBER
    return _INVITES if len(keys) == 2 else _INVITE


def item_allow(raw_path: str) -> tuple[str, ...]:
    """The Allow of the resource at `raw_path` under /Channels/ (still percent-encoded)."""
    parts = raw_path.split("?", 1)[0].split("/Channels/", 1)[-1].split("/")
    if len(parts) > 1 and parts[1] not in ("Members", "Invites"):
        return allow_header(_CHANNEL)
    return allow_header(_table(parts[:3]))
