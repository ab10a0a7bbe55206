"""/v2/Services/{IS}/Users — the seed resource of SPEC §3."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes, urlencode

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..auth import Principal
from ..formats import iso8601
from ..paging import page_meta, parse_page_request
from ..store.users import UserFilters, page_key
from ..usecases import users as users_uc
from ..usecases.effects import apply
from . import push as push_api
from . import user_channels as user_channels_api
from .common import (
    authenticate,
    base_url,
    ctx,
    empty_response,
    json_response,
    origin,
    page_cursors,
    query,
    query_values,
    read_form,
    require_admin,
)
from .render import user_to_json
from .routing import allow_header, dispatch, method_table

FILTERS = ("Identity", "IdentityPrefix", "RoleSid", "UpdatedAfter")  # SPEC §11, tokensvc extensions


def _filters(request: Request) -> UserFilters:
    values = query_values(request)

    def one(name: str) -> str | None:
        given = values.get(name)
        if given is not None and len(given) > 1:
            raise errors.invalid_param(name, "may be given once")
        return given[0] if given else None

    return users_uc.user_filters(identities=values.get("Identity", ()), identity_prefix=one("IdentityPrefix"),
                                 role_sid=one("RoleSid"), updated_after=one("UpdatedAfter"))


def _filter_query(filters: UserFilters) -> str:
    """The filters as they go on every page URL (a date in SPEC §1's form)."""
    pairs = [("Identity", identity) for identity in filters.identities]
    if filters.identity_prefix is not None:
        pairs.append(("IdentityPrefix", filters.identity_prefix))
    if filters.role_sid is not None:
        pairs.append(("RoleSid", filters.role_sid))
    if filters.updated_after is not None:
        pairs.append(("UpdatedAfter", iso8601(filters.updated_after)))
    return urlencode(pairs)


async def list_(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    filters = _filters(request)
    path = f"/v2/Services/{service_sid}/Users"
    cursors = page_cursors(request, path, filters.order)
    req = parse_page_request(query(request), cursors)
    page = await users_uc.list_users(ctx(request), principal=principal, service_sid=service_sid, req=req,
                                     filters=filters)
    base = base_url(request)
    order = filters.order
    meta = page_meta(f"{base}{path}", "users", cursors, req, page, row_id=lambda r: page_key(r, order))
    extra = _filter_query(filters)
    if extra:
        for link in ("first_page_url", "previous_page_url", "url", "next_page_url"):
            if meta[link] is not None:
                meta[link] += "&" + extra
    return json_response({"users": [user_to_json(row._mapping, base) for row in page.rows], "meta": meta})


async def create(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    require_admin(principal)
    c = ctx(request)
    form = await read_form(request)
    identity = validation.identity(form.get("Identity"))
    role_sid = form.get("RoleSid")  # present but empty is malformed (50102), as on update
    attributes = validation.attributes(form.require("Attributes")) if "Attributes" in form else None
    friendly_name = validation.friendly_name(form.require("FriendlyName")) if "FriendlyName" in form else None
    user, events = await users_uc.create_user(c, origin=origin(request, principal),
                                              account_sid=principal.account_sid, service_sid=service_sid,
                                              identity=identity, role_sid=role_sid, attributes=attributes,
                                              friendly_name=friendly_name)
    await apply(c, events)
    return json_response(user_to_json(user, base_url(request)), 201)


def _user_path(request: Request) -> tuple[str, str | None, str | None]:
    """(user key, sub-resource, the sub-resource's item key) from the raw path, so an identity
    with `%2F` stays one segment."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    raw = raw.split(b"?", 1)[0]
    parts = raw.split(b"/")
    try:
        at = parts.index(b"Users")
    except ValueError:
        raise errors.not_found() from None
    rest = parts[at + 1:]
    child: str | None = None  # /Users/{key}/Channels/{CH} (a User Channel) or /Bindings/{BS}
    if len(rest) == 3 and rest[1] in (b"Channels", b"Bindings"):
        try:
            child = unquote_to_bytes(rest.pop()).decode("utf-8")
        except UnicodeDecodeError:
            raise errors.not_found() from None
    if not rest or not rest[0] or len(rest) > 2 or child == "":
        raise errors.not_found()
    try:
        key = unquote_to_bytes(rest[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.not_found() from None
    sub = rest[1].decode("latin-1") if len(rest) == 2 else None
    if sub is not None and sub not in ("Channels", "Bindings"):
        raise errors.not_found()
    return key, sub, child


async def item(request: Request) -> Response:
    """/Users/{key} and /Users/{key}/{Channels|Bindings}: one route (an identity may hold `%2F`),
    two resources, each with its own declared methods."""
    key, sub, child = _user_path(request)
    request.state.user_key = key
    if sub is None:
        return await dispatch(request, _USER)
    if sub == "Bindings":  # SPEC §9: the user's push bindings
        if child is None:
            return await dispatch(request, _USER_BINDINGS)
        request.state.binding_sid = child
        return await dispatch(request, _USER_BINDING)
    if child is None:  # SPEC §8: the user's joined and invited channels
        return await dispatch(request, _USER_CHANNELS)
    request.state.channel_key = child
    return await dispatch(request, _USER_CHANNEL)


async def _caller(request: Request) -> tuple[Principal, str]:
    service_sid = request.path_params["service_sid"]
    return await authenticate(request, service_sid=service_sid), service_sid


async def fetch(request: Request) -> Response:
    principal, service_sid = await _caller(request)
    user, online, notifiable = await users_uc.fetch_user(ctx(request), account_sid=principal.account_sid,
                                                         service_sid=service_sid, key=request.state.user_key)
    return json_response(user_to_json(user, base_url(request), is_online=online, is_notifiable=notifiable))


async def delete(request: Request) -> Response:
    principal, service_sid = await _caller(request)
    require_admin(principal)
    c = ctx(request)
    _, events = await users_uc.delete_user(c, origin=origin(request, principal),
                                           account_sid=principal.account_sid, service_sid=service_sid,
                                           key=request.state.user_key)
    await apply(c, events)
    return empty_response()


async def update(request: Request) -> Response:
    principal, service_sid = await _caller(request)
    c = ctx(request)
    form = await read_form(request)
    changes: dict[str, Any] = {}
    if "RoleSid" in form:
        changes["role_sid"] = form.get("RoleSid")
    if "Attributes" in form:
        changes["attributes"] = validation.attributes(form.require("Attributes"))
    if "FriendlyName" in form:
        changes["friendly_name"] = validation.friendly_name(form.require("FriendlyName"))
    user, events = await users_uc.update_user(c, principal=principal, origin=origin(request, principal),
                                              caller=getattr(request.state, "user", None),
                                              service_sid=service_sid, key=request.state.user_key, changes=changes)
    await apply(c, events)
    return json_response(user_to_json(user, base_url(request)))


_USER = method_table(GET=fetch, POST=update, DELETE=delete)
_USER_BINDINGS = method_table(GET=push_api.list_user_bindings)
_USER_BINDING = method_table(GET=push_api.fetch_user_binding, DELETE=push_api.delete_user_binding)
_USER_CHANNELS = method_table(GET=user_channels_api.list_)
_USER_CHANNEL = method_table(GET=user_channels_api.fetch, POST=user_channels_api.update,
                             DELETE=user_channels_api.delete)
ITEM_METHODS = tuple(sorted(set(_USER) | set(_USER_BINDINGS) | set(_USER_BINDING) | set(_USER_CHANNELS)
                            | set(_USER_CHANNEL)))


def item_allow(raw_path: str) -> tuple[str, ...]:
    """The Allow of /Users/{key}, of its Channels or Bindings, or of one of their items (the key
    still percent-encoded)."""
    parts = raw_path.split("?", 1)[0].split("/Users/", 1)[-1].split("/")
    if len(parts) == 1:
        return allow_header(_USER)
    channels = parts[1] == "Channels"
    if len(parts) == 3:
        return allow_header(_USER_CHANNEL if channels else _USER_BINDING)
    return allow_header(_USER_CHANNELS if channels else _USER_BINDINGS)
