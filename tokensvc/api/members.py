"""/Channels/{CH}/Members[/{MB}] and /Channels/{CH}/Invites[/{IN}] (SPEC §8); routed by
api/channels.item, which leaves the keys in request.state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..store import members as store
from ..usecases import members as members_uc
from ..usecases.effects import apply
from .common import (
    OwnedPage,
    authenticate,
    base_url,
    ctx,
    empty_response,
    json_response,
    origin,
    query_values,
    read_form,
)
from .render import invite_to_json, member_to_json

MAX_PAGE_SIZE = 100  # as every Chat v2 list but a user's channels


def _caller(request: Request) -> Any:
    return getattr(request.state, "user", None)


def with_filters(meta: dict[str, Any], name: str, values: list[str]) -> dict[str, Any]:
    """The list's `meta` with its filter (repeated `name`) kept in every page URL, as Twilio's are."""
    if values:
        extra = "&" + urlencode([(name, v) for v in values])
        for link in ("first_page_url", "previous_page_url", "url", "next_page_url"):
            if meta[link] is not None:
                meta[link] += extra
    return meta


def consumption_values(form: Any) -> dict[str, Any]:
    """LastConsumedMessageIndex (50406) and LastConsumptionTimestamp (50405), parsed: a member's
    and a User Channel's (SPEC §8)."""
    values: dict[str, Any] = {}
    if "LastConsumedMessageIndex" in form:
        values["last_consumed_message_index"] = validation.message_index(form.require("LastConsumedMessageIndex"))
    if "LastConsumptionTimestamp" in form:
        values["last_consumption_timestamp"] = validation.iso_date(form.require("LastConsumptionTimestamp"),
                                                                   errors.invalid_consumption_timestamp())
    return values


def member_values(form: Any) -> dict[str, Any]:
    """The optional parameters of a member create or update, parsed."""
    values: dict[str, Any] = {}
    if "RoleSid" in form:
        values["role_sid"] = form.get("RoleSid")
    if "Attributes" in form:
        values["attributes"] = validation.attributes(form.require("Attributes"))
    values.update(consumption_values(form))
    if "DateCreated" in form:
        values["date_created"] = validation.iso_date(form.require("DateCreated"), errors.invalid_date_created())
    if "DateUpdated" in form:
        values["date_updated"] = validation.iso_date(form.require("DateUpdated"), errors.invalid_date_updated())
    return values


async def _rows(request: Request, sub: str, status: str, to_json: Callable[[Any, str], dict[str, Any]]) -> Response:
    """A channel's members or invites, filtered by Identity (repeated)."""
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    identities = query_values(request).get("Identity", [])
    asked = OwnedPage(request, lambda channel_sid: f"/v2/Services/{service_sid}/Channels/{channel_sid}/{sub}",
                      max_size=MAX_PAGE_SIZE)
    _, page = await members_uc.list_channel_rows(ctx(request), principal=principal, caller=_caller(request),
                                                 service_sid=service_sid, channel_key=request.state.channel_key,
                                                 status=status, identities=identities, page_request=asked)
    base = base_url(request)
    list_key = sub.lower()
    return json_response({list_key: [to_json(r._mapping, base) for r in page.rows],
                          "meta": with_filters(asked.meta(base, list_key, page), "Identity", identities)})


async def list_members(request: Request) -> Response:
    return await _rows(request, "Members", store.JOINED, member_to_json)


async def list_invites(request: Request) -> Response:
    return await _rows(request, "Invites", store.INVITED, invite_to_json)


async def create_member(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    form = await read_form(request)
    identity = validation.identity(form.get("Identity"))
    member, events = await members_uc.add_member(c, principal=principal, origin=origin(request, principal),
                                                 caller=_caller(request),
                                                 service_sid=service_sid, channel_key=request.state.channel_key,
                                                 identity=identity, values=member_values(form))
    await apply(c, events)
    return json_response(member_to_json(member, base_url(request)), 201)


async def _one(request: Request, read: Callable[..., Any]) -> Any:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    return await read(ctx(request), principal=principal, caller=_caller(request), service_sid=service_sid,
                      channel_key=request.state.channel_key, key=request.state.item_key)


async def fetch_member(request: Request) -> Response:
    return json_response(member_to_json(await _one(request, members_uc.get_member), base_url(request)))


async def update_member(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    values = member_values(await read_form(request))
    member, events = await members_uc.update_member(c, principal=principal, origin=origin(request, principal),
                                                    caller=_caller(request),
                                                    service_sid=service_sid, channel_key=request.state.channel_key,
                                                    key=request.state.item_key, values=values)
    await apply(c, events)
    return json_response(member_to_json(member, base_url(request)))


async def delete_member(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    _, events = await members_uc.remove_member(c, principal=principal, origin=origin(request, principal),
                                               caller=_caller(request),
                                               service_sid=service_sid, channel_key=request.state.channel_key,
                                               key=request.state.item_key)
    await apply(c, events)
    return empty_response()


async def create_invite(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    form = await read_form(request)
    identity = validation.identity(form.get("Identity"))
    invite, events = await members_uc.create_invite(c, principal=principal, caller=_caller(request),
                                                    service_sid=service_sid, channel_key=request.state.channel_key,
                                                    identity=identity, role_sid=form.get("RoleSid"))
    await apply(c, events)
    return json_response(invite_to_json(invite, base_url(request)), 201)


async def fetch_invite(request: Request) -> Response:
    return json_response(invite_to_json(await _one(request, members_uc.get_channel_invite), base_url(request)))


async def delete_invite(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    _, events = await members_uc.delete_invite(c, principal=principal, caller=_caller(request),
                                               service_sid=service_sid, channel_key=request.state.channel_key,
                                               key=request.state.item_key)
    await apply(c, events)
    return empty_response()
