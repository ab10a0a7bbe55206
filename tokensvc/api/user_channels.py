"""/v2/Services/{IS}/Users/{US}/Channels[/{CH}] (SPEC §8): a user's joined and invited channels;
routed by api/users.item, which leaves the keys in request.state."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import validation
from ..usecases import members as members_uc
from ..usecases.effects import apply
from .common import OwnedPage, authenticate, base_url, ctx, empty_response, json_response, origin, read_form
from .members import consumption_values
from .render import user_channel_to_json

MAX_PAGE_SIZE = 50  # SPEC §3


def _client(request: Request, principal: Any) -> Any:
    return getattr(request.state, "user", None) if principal.is_client else None


async def list_(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    asked = OwnedPage(request, lambda user_sid: f"/v2/Services/{service_sid}/Users/{user_sid}/Channels",
                      max_size=MAX_PAGE_SIZE)
    _, page = await members_uc.list_user_channels(ctx(request), account_sid=principal.account_sid,
                                                  service_sid=service_sid, user_key=request.state.user_key,
                                                  caller=_client(request, principal), page_request=asked)
    base = base_url(request)
    return json_response({"channels": [user_channel_to_json(r._mapping, base) for r in page.rows],
                          "meta": asked.meta(base, "channels", page)})


async def fetch(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    row = await members_uc.get_user_channel(ctx(request), account_sid=principal.account_sid, service_sid=service_sid,
                                            user_key=request.state.user_key, channel_key=request.state.channel_key,
                                            caller=_client(request, principal))
    return json_response(user_channel_to_json(row, base_url(request)))


async def update(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    form = await read_form(request)
    values: dict[str, Any] = {}
    if "NotificationLevel" in form:
        values["notification_level"] = validation.notification_level(form.require("NotificationLevel"))
    values.update(consumption_values(form))
    row, events = await members_uc.update_user_channel(c, principal=principal, origin=origin(request, principal),
                                                       caller=_client(request, principal),
                                                       service_sid=service_sid, user_key=request.state.user_key,
                                                       channel_key=request.state.channel_key, values=values)
    await apply(c, events)
    return json_response(user_channel_to_json(row, base_url(request)))


async def delete(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    _, events = await members_uc.delete_user_channel(c, principal=principal, origin=origin(request, principal),
                                                     caller=_client(request, principal),
                                                     service_sid=service_sid, user_key=request.state.user_key,
                                                     channel_key=request.state.channel_key)
    await apply(c, events)
    return empty_response()
