"""/2010-04-01/Accounts/{AC}/Keys.json — API keys, managed with account credentials only."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..auth import Principal
from ..keys import create_key, delete_key, get_key, key_to_json, list_keys, update_key
from ..paging import encode_token, parse_page_request
from .common import authenticate, ctx, empty_response, json_response, query, read_form


async def _account(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.kind != "account":
        raise errors.forbidden("API keys are managed with account credentials only")
    if principal.account_sid != request.path_params["account_sid"]:
        raise errors.not_found()
    return principal


async def list_or_create(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    account_sid = principal.account_sid
    if request.method == "POST":
        form = await read_form(request)
        name = validation.friendly_name(form.get("FriendlyName")) if "FriendlyName" in form else None
        row, secret = await c.db.run(lambda conn: create_key(conn, account_sid=account_sid, friendly_name=name, box=c.box))
        return json_response(key_to_json(row, secret=secret), 201)
    req = parse_page_request(query(request))
    page = await c.db.run(lambda conn: list_keys(conn, account_sid=account_sid, req=req))
    uri = f"/2010-04-01/Accounts/{account_sid}/Keys.json"

    def link(page_no: int, token: str | None) -> str:
        params: dict[str, object] = {"PageSize": req.page_size, "Page": page_no}
        if token:
            params["PageToken"] = token
        return f"{uri}?{urlencode(params)}"

    start = req.page * req.page_size
    rows = page.rows
    return json_response({
        "keys": [key_to_json(r._mapping) for r in rows],
        "first_page_uri": link(0, None),
        "next_page_uri": link(req.page + 1, encode_token("n", rows[-1].id)) if page.has_next and rows else None,
        "previous_page_uri": link(req.page - 1, encode_token("p", rows[0].id)) if page.has_previous and rows else None,
        "uri": link(req.page, req.token),
        "page": req.page,
        "page_size": req.page_size,
        "start": start,
        "end": start + max(len(rows) - 1, 0),
    })


async def item(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    sid = request.path_params["sid"]
    account_sid = principal.account_sid
    if request.method == "GET":
        row = await c.db.run(lambda conn: get_key(conn, account_sid=account_sid, sid=sid))
        return json_response(key_to_json(row))
    if request.method == "POST":
        form = await read_form(request)
        name = validation.friendly_name(form.get("FriendlyName")) if "FriendlyName" in form else None
        row = await c.db.run(lambda conn: update_key(conn, account_sid=account_sid, sid=sid, friendly_name=name))
        return json_response(key_to_json(row))
    await c.db.run(lambda conn: delete_key(conn, account_sid=account_sid, sid=sid))
    c.auth.forget()  # this process stops honouring the key at once; others within cache_seconds
    hub = c.extras.get("hub")
    if hub is not None:  # its sessions here close now; other replicas' Hubs notice within a second
        await hub.key_deleted(sid)
    return empty_response()
