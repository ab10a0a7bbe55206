"""/v2/Services/{IS}/Roles: a handler per method."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import validation
from ..auth import Principal
from ..errors import missing_param
from ..usecases import roles as roles_uc
from .common import authenticate, base_url, ctx, empty_response, json_response, read_form, require_admin, service_list
from .render import role_to_json


async def _admin(request: Request) -> tuple[Principal, str]:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    require_admin(principal)
    return principal, service_sid


async def list_(request: Request) -> Response:
    principal, service_sid = await _admin(request)
    return await service_list(request, principal, service_sid, "roles", roles_uc.list_roles, role_to_json)


async def create(request: Request) -> Response:
    principal, service_sid = await _admin(request)
    form = await read_form(request)
    name = validation.friendly_name(form.require("FriendlyName"))
    type = form.require("Type")
    permissions = form.getlist("Permission")
    if not permissions:
        raise missing_param("Permission")
    role = await roles_uc.create_role(ctx(request), account_sid=principal.account_sid, service_sid=service_sid,
                                      friendly_name=name, type=type, permissions=permissions)
    return json_response(role_to_json(role, base_url(request)), 201)


async def fetch(request: Request) -> Response:
    principal, service_sid = await _admin(request)
    role = await roles_uc.get_role(ctx(request), account_sid=principal.account_sid, service_sid=service_sid,
                                   sid=request.path_params["sid"])
    return json_response(role_to_json(role, base_url(request)))


async def update(request: Request) -> Response:
    principal, service_sid = await _admin(request)
    form = await read_form(request)
    permissions = form.getlist("Permission") if "Permission" in form else None
    role = await roles_uc.update_role(ctx(request), account_sid=principal.account_sid, service_sid=service_sid,
                                      sid=request.path_params["sid"], permissions=permissions)
    return json_response(role_to_json(role, base_url(request)))


async def delete(request: Request) -> Response:
    principal, service_sid = await _admin(request)
    await roles_uc.delete_role(ctx(request), account_sid=principal.account_sid, service_sid=service_sid,
                               sid=request.path_params["sid"])
    return empty_response()
