"""Console pages for services, roles, the live online count, API keys and signing keys: each
calls the use case the API calls (tokensvc/usecases), renders, and applies returned events."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..api.common import Form, ctx, json_response
from ..api.render import error_response
from ..usecases import api_keys as api_keys_uc
from ..usecases import presence as presence_uc
from ..usecases import roles as roles_uc
from ..usecases import services as services_uc
from ..usecases import signing_keys as signing_uc
from ..usecases.effects import apply
from .web import PREFIX, Admin, action, html, listing, page, redirect, signed_in


async def service_and_roles(request: Request, admin: Admin, service_sid: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The service and its roles by SID (names in lists, the role choice of a user), in one read."""
    svc, found = await roles_uc.service_and_roles(ctx(request), account_sid=admin.account_sid, service_sid=service_sid)
    return svc, {row.sid: dict(row._mapping) for row in found.rows}


@page
async def services(request: Request, admin: Admin) -> Response:
    asked = listing(request, f"{PREFIX}/services")
    found = await services_uc.list_services(ctx(request), account_sid=admin.account_sid, req=asked.req)
    return html(request, "services.html", title="Services", nav="services",
                services=[row._mapping for row in found.rows], links=asked.links(found))


@page
async def service(request: Request, admin: Admin) -> Response:
    c = ctx(request)
    sid = request.path_params["service_sid"]
    svc, roles = await service_and_roles(request, admin, sid)
    online = await presence_uc.online_count(c, account_sid=admin.account_sid, service_sid=sid)
    return html(request, "service.html", title=svc["friendly_name"] or sid, nav="services", service=svc,
                online=online, roles=roles, filters=json.loads(svc["webhook_filters"]))


async def online(request: Request) -> Response:
    """GET /console/services/{IS}/online: {"online": n} for the page's live count (JSON, so a
    missing session is a 401 body rather than a redirect to the sign-in page)."""
    found = await signed_in(request)
    if found is None:
        return error_response(errors.TwilioError(401, 20003, "Sign in to the console first"))
    count = await presence_uc.online_count(ctx(request), account_sid=found[0].account_sid,
                                           service_sid=request.path_params["service_sid"])
    response = json_response({"online": count})
    response.headers["Cache-Control"] = "no-store"
    return response


@page
async def roles(request: Request, admin: Admin) -> Response:
    c = ctx(request)
    sid = request.path_params["service_sid"]
    svc = await services_uc.get_service(c, account_sid=admin.account_sid, sid=sid)
    asked = listing(request, f"{PREFIX}/services/{sid}/roles", size=100)
    found = await roles_uc.list_roles(c, account_sid=admin.account_sid, service_sid=sid, req=asked.req)
    rows = [dict(row._mapping, permission_list=json.loads(row.permissions)) for row in found.rows]
    return html(request, "roles.html", title=f"Roles · {svc['friendly_name'] or sid}", nav="services", service=svc,
                roles=rows, links=asked.links(found))


# ---------------------------------------------------------------- API keys


async def _keys_page(request: Request, admin: Admin, *, status: int = 200, **values: Any) -> Response:
    asked = listing(request, f"{PREFIX}/keys")
    found = await api_keys_uc.list_api_keys(ctx(request), account_sid=admin.account_sid, req=asked.req)
    values.setdefault("error", None)
    values.setdefault("notice", None)
    return html(request, "keys.html", status, title="API keys", nav="keys", keys=[row._mapping for row in found.rows],
                links=asked.links(found), **values)


@page
async def keys(request: Request, admin: Admin) -> Response:
    notice = "The API key was deleted." if request.query_params.get("deleted") else None
    return await _keys_page(request, admin, notice=notice)


@action
async def create_key(request: Request, admin: Admin, form: Form) -> Response:
    """POST /console/keys: the new key's secret on this page only (never stored in clear, never again)."""
    c = ctx(request)
    try:
        name = validation.friendly_name(form.get("friendly_name") or "") or None
        (row, secret), events = await api_keys_uc.create_api_key(c, account_sid=admin.account_sid,
                                                                 friendly_name=name)
    except errors.TwilioError as exc:
        return await _keys_page(request, admin, status=exc.status, error=f"{exc.message} (error {exc.code})")
    await apply(c, events)
    return html(request, "key_created.html", 201, title="API key created", nav="keys", key=row, secret=secret)


@page
async def confirm_delete_key(request: Request, admin: Admin) -> Response:
    row = await api_keys_uc.get_api_key(ctx(request), account_sid=admin.account_sid, sid=request.path_params["sid"])
    return html(request, "key_delete.html", title="Delete API key", nav="keys", key=row)


@action
async def delete_key(request: Request, admin: Admin, form: Form) -> Response:
    c = ctx(request)
    _, events = await api_keys_uc.delete_api_key(c, account_sid=admin.account_sid, sid=request.path_params["sid"])
    await apply(c, events)
    return redirect(f"{PREFIX}/keys?deleted=1")


# ---------------------------------------------------------------- signing keys


@page
async def signing_keys(request: Request, admin: Admin) -> Response:
    c = ctx(request)
    listed = await signing_uc.list_signing_keys(c)
    rotated = request.query_params.get("rotated")
    notice = None
    if rotated and any(k["kid"] == rotated and k["status"] == "active" for k in listed):  # no words put in our mouth
        notice = f"Rotated: new tokens are signed with {rotated}; the previous key still verifies."
    return html(request, "signing_keys.html", title="Signing keys", nav="signing", keys=listed, notice=notice,
                may_rotate=await signing_uc.is_operator(c, account_sid=admin.account_sid))


@action
async def rotate_signing_key(request: Request, admin: Admin, form: Form) -> Response:
    kid = await signing_uc.rotate_signing_key(ctx(request), account_sid=admin.account_sid)
    return redirect(f"{PREFIX}/signing-keys?rotated={kid}")
