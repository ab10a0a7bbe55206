"""/v2/Services/{IS}/Roles."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import validation
from ..errors import missing_param
from ..roles import create_role, delete_role, get_role, list_roles, role_to_json, update_role
from ..services import get_service
from .common import authenticate, base_url, ctx, empty_response, json_response, read_form, require_admin, service_list


async def list_or_create(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    require_admin(principal)
    c = ctx(request)
    base = base_url(request)
    if request.method == "POST":
        form = await read_form(request)
        name = validation.friendly_name(form.require("FriendlyName"))
        type = form.require("Type")
        permissions = form.getlist("Permission")
        if not permissions:
            raise missing_param("Permission")

        def create(conn):
            svc = get_service(conn, account_sid=principal.account_sid, sid=service_sid)
            return create_role(conn, service=svc, friendly_name=name, type=type, permissions=permissions)

        return json_response(role_to_json(await c.db.run(create), base), 201)
    return await service_list(request, principal, service_sid, "roles", list_roles, role_to_json)


async def item(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    sid = request.path_params["sid"]
    principal = await authenticate(request, service_sid=service_sid)
    require_admin(principal)
    c = ctx(request)
    permissions = None
    if request.method == "POST":
        form = await read_form(request)
        permissions = form.getlist("Permission") if "Permission" in form else None

    def act(conn):
        get_service(conn, account_sid=principal.account_sid, sid=service_sid)
        if request.method == "GET":
            return get_role(conn, service_sid=service_sid, sid=sid)
        if request.method == "POST":
            return update_role(conn, service_sid=service_sid, sid=sid, permissions=permissions)
        return delete_role(conn, service_sid=service_sid, sid=sid)

    role = await c.db.run(act)
    if request.method == "DELETE":
        return empty_response()
    return json_response(role_to_json(role, base_url(request)))
