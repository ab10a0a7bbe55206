"""/2010-04-01/Accounts/{AC}/Keys.json — API keys, managed with account credentials only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..auth import Principal
from ..paging import page_links, parse_page_request
from ..usecases import api_keys as api_keys_uc
from ..usecases.effects import apply
from .common import authenticate, ctx, empty_response, json_response, page_cursors, query, read_form
from .render import key_to_json


async def _account(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.kind != "account":
        raise errors.forbidden("API keys are managed with account credentials only")
    if principal.account_sid != request.path_params["account_sid"]:
        raise errors.not_found()
    return principal


async def create(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    form = await read_form(request)
    name = validation.friendly_name(form.require("FriendlyName")) if "FriendlyName" in form else None
    (row, secret), events = await api_keys_uc.create_api_key(c, account_sid=principal.account_sid,
                                                             friendly_name=name)
    await apply(c, events)
    return json_response(key_to_json(row, secret=secret), 201)


async def list_(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    account_sid = principal.account_sid
    uri = f"/2010-04-01/Accounts/{account_sid}/Keys.json"
    cursors = page_cursors(request, uri)
    req = parse_page_request(query(request), cursors)
    page = await api_keys_uc.list_api_keys(c, account_sid=account_sid, req=req)
    links = page_links(uri, cursors, req, page)
    start = req.page * req.page_size
    rows = page.rows
    return json_response({
        "keys": [key_to_json(r._mapping) for r in rows],
        "first_page_uri": links.first,
        "next_page_uri": links.next,
        "previous_page_uri": links.previous,
        "uri": links.current,
        "page": req.page,
        "page_size": req.page_size,
        "start": start,
        "end": start + max(len(rows) - 1, 0),
    })


async def fetch(request: Request) -> Response:
    principal = await _account(request)
    sid = request.path_params["sid"]
    row = await api_keys_uc.get_api_key(ctx(request), account_sid=principal.account_sid, sid=sid)
    return json_response(key_to_json(row))


async def update(request: Request) -> Response:
    principal = await _account(request)
    sid = request.path_params["sid"]
    form = await read_form(request)
    name = validation.friendly_name(form.require("FriendlyName")) if "FriendlyName" in form else None
    c = ctx(request)
    row, events = await api_keys_uc.update_api_key(c, account_sid=principal.account_sid, sid=sid, friendly_name=name)
    await apply(c, events)
    return json_response(key_to_json(row))


async def delete(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    sid = request.path_params["sid"]
    _, events = await api_keys_uc.delete_api_key(c, account_sid=principal.account_sid, sid=sid)
    await apply(c, events)
    return empty_response()
