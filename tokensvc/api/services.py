"""/v2/Services: parse, call the domain, serialize."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..paging import page_meta, parse_page_request
from ..usecases import services as services_uc
from ..usecases.effects import apply
from ..webhooks.catalog import FILTERS
from .common import (
    authenticate,
    base_url,
    ctx,
    empty_response,
    json_response,
    page_cursors,
    query,
    read_form,
    require_admin,
)
from .render import service_to_json

_NOTIFICATION_PARAMS = {
    "NewMessage": "new_message", "AddedToChannel": "added_to_channel",
    "RemovedFromChannel": "removed_from_channel", "InvitedToChannel": "invited_to_channel",
}


async def _admin(request: Request):
    principal = await authenticate(request)
    require_admin(principal)
    return principal


async def list_(request: Request) -> Response:
    principal = await _admin(request)
    c = ctx(request)
    base = base_url(request)
    cursors = page_cursors(request, "/v2/Services")
    req = parse_page_request(query(request), cursors)
    page = await services_uc.list_services(c, account_sid=principal.account_sid, req=req)
    return json_response({"services": [service_to_json(s._mapping, base) for s in page.rows],
                          "meta": page_meta(f"{base}/v2/Services", "services", cursors, req, page)})


async def create(request: Request) -> Response:
    principal = await _admin(request)
    c = ctx(request)
    form = await read_form(request)
    name = validation.friendly_name(form.require("FriendlyName"))
    svc, events = await services_uc.create_service(c, account_sid=principal.account_sid, friendly_name=name)
    await apply(c, events)
    return json_response(service_to_json(svc, base_url(request)), 201)


def parse_service_update(form: Any) -> dict[str, Any]:
    """Twilio's UpdateService parameters → column changes (partial objects for nested ones)."""
    changes: dict[str, Any] = {}
    if "FriendlyName" in form:
        changes["friendly_name"] = validation.friendly_name(form.get("FriendlyName"))
    for param, column in (("DefaultServiceRoleSid", "default_service_role_sid"),
                          ("DefaultChannelRoleSid", "default_channel_role_sid"),
                          ("DefaultChannelCreatorRoleSid", "default_channel_creator_role_sid")):
        if param in form:
            changes[column] = form.get(param)
    for param, column in (("ReadStatusEnabled", "read_status_enabled"),
                          ("ReachabilityEnabled", "reachability_enabled")):
        if param in form:
            changes[column] = validation.boolean(param, form.get(param))
    for param, column, lo, hi in (("TypingIndicatorTimeout", "typing_indicator_timeout", 1, 86400),
                                  ("ConsumptionReportInterval", "consumption_report_interval", 1, 86400)):
        if param in form:
            changes[column] = validation.integer(param, form.get(param), minimum=lo, maximum=hi)
    changes.update(parse_webhook_settings(form))
    notes: dict[str, Any] = {}
    for prefix, key in _NOTIFICATION_PARAMS.items():
        for field, attr in (("Enabled", "enabled"), ("Template", "template"), ("Sound", "sound"),
                            ("BadgeCountEnabled", "badge_count_enabled")):
            param = f"Notifications.{prefix}.{field}"
            if param in form:
                raw = form.get(param)
                value: Any = validation.boolean(param, raw) if attr.endswith("enabled") else raw
                notes.setdefault(key, {})[attr] = value
    if "Notifications.LogEnabled" in form:
        notes["log_enabled"] = validation.boolean("Notifications.LogEnabled", form.get("Notifications.LogEnabled"))
    if notes:
        changes["notifications"] = notes
    limits: dict[str, Any] = {}
    for param, key in (("Limits.ChannelMembers", "channel_members"), ("Limits.UserChannels", "user_channels")):
        if param in form:
            limits[key] = validation.integer(param, form.get(param), minimum=1, maximum=1000)
    if limits:
        changes["limits"] = limits
    if "Media.CompatibilityMessage" in form:
        changes["media"] = {"compatibility_message": form.get("Media.CompatibilityMessage")}
    return changes


def parse_webhook_settings(form: Any) -> dict[str, Any]:
    """The webhook settings of SPEC §10, refused with Twilio's codes (50054, 50055, 50065, 50077, 50078)."""
    changes: dict[str, Any] = {}
    for param, column in (("PreWebhookRetryCount", "pre_webhook_retry_count"),
                          ("PostWebhookRetryCount", "post_webhook_retry_count")):
        if param in form:
            raw = form.get(param).strip()
            if not (raw.isascii() and raw.isdigit() and int(raw) <= 3):
                raise errors.invalid_webhook_retry_count(param)
            changes[column] = int(raw)
    for param, column, refusal in (("PreWebhookUrl", "pre_webhook_url", errors.invalid_pre_webhook_url),
                                   ("PostWebhookUrl", "post_webhook_url", errors.invalid_post_webhook_url)):
        if param in form:
            try:
                changes[column] = validation.url(param, form.get(param))
            except errors.TwilioError:
                raise refusal() from None
    if "WebhookMethod" in form:
        method = form.get("WebhookMethod").upper()
        if method not in ("GET", "POST"):
            raise errors.invalid_webhook_method()
        changes["webhook_method"] = method
    if "WebhookFilters" in form:
        filters = [f for f in form.getlist("WebhookFilters") if f]
        for f in filters:
            if f not in FILTERS:
                raise errors.invalid_webhook_filter(f)
        changes["webhook_filters"] = list(dict.fromkeys(filters))
    return changes


async def fetch(request: Request) -> Response:
    sid = request.path_params["sid"]
    principal = await _admin(request)
    svc = await services_uc.get_service(ctx(request), account_sid=principal.account_sid, sid=sid)
    return json_response(service_to_json(svc, base_url(request)))


async def update(request: Request) -> Response:
    sid = request.path_params["sid"]
    principal = await _admin(request)
    c = ctx(request)
    changes = parse_service_update(await read_form(request))
    svc, events = await services_uc.update_service(c, account_sid=principal.account_sid, sid=sid, changes=changes)
    await apply(c, events)
    return json_response(service_to_json(svc, base_url(request)))


async def delete(request: Request) -> Response:
    sid = request.path_params["sid"]
    principal = await _admin(request)
    c = ctx(request)
    _, events = await services_uc.delete_service(c, account_sid=principal.account_sid, sid=sid)
    await apply(c, events)
    return empty_response()
