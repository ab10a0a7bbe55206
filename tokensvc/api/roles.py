"""/v2/Services/{IS}/Roles: a handler per method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import validation
from ..auth import Principal
from ..errors import missing_param
from ..store.roles import create_role, delete_role, get_role, update_role
from ..store.services import get_service
from ..usecases.roles import list_roles
from .common import authenticate, base_url, ctx, empty_response, json_response, read_form, require_admin, service_list
from .render import role_to_json


async def _admin(request: Request) -> tuple[Principal, str]:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    require_admin(principal)
    return principal, service_sid


async def list_(request: Request) -> Response:
    principal, service_sid = await _admin(request)
    return await service_list(request, principal, service_sid, "roles", list_roles, role_to_json)


async def create(request: Request) -> Response:
    principal, service_sid = await _admin(request)
    form = await read_form(request)
    name = validation.friendly_name(form.require("FriendlyName"))
    type = form.require("Type")
    permissions = form.getlist("Permission")
    if not permissions:
        raise missing_param("Permission")

    def create_(conn: Any) -> Any:
        svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        return create_role(conn, service=svc, friendly_name=name, type=type, permissions=permissions)

    return json_response(role_to_json(await ctx(request).db.run(create_), base_url(request)), 201)


async def _in_service(request: Request, caller: tuple[Principal, str], act: Callable[[Any, str, str], Any], *,
                      writes: bool = True) -> Any:
    """act(conn, service_sid, role_sid) in one transaction, once the service is the caller's."""
    principal, service_sid = caller
    sid = request.path_params["sid"]

    def run(conn: Any) -> Any:
        get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        return act(conn, service_sid, sid)

    db = ctx(request).db
    return await (db.run(run) if writes else db.read(run))


async def fetch(request: Request) -> Response:
    role = await _in_service(request, await _admin(request),
                             lambda conn, service_sid, sid: get_role(conn, service_sid=service_sid, sid=sid),
                             writes=False)
    return json_response(role_to_json(role, base_url(request)))


async def update(request: Request) -> Response:
    caller = await _admin(request)
    form = await read_form(request)
    permissions = form.getlist("Permission") if "Permission" in form else None
    role = await _in_service(request, caller, lambda conn, service_sid, sid: update_role(
        conn, service_sid=service_sid, sid=sid, permissions=permissions))
    return json_response(role_to_json(role, base_url(request)))


async def delete(request: Request) -> Response:
    await _in_service(request, await _admin(request),
                      lambda conn, service_sid, sid: delete_role(conn, service_sid=service_sid, sid=sid))
    return empty_response()
