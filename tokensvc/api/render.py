"""What the API sends: the one renderer of Twilio errors as HTTP responses (SPEC §2; the
catalogue itself, tokensvc/errors.py, stays free of any web framework), and one serializer per
resource, shared by fetch, list, create, update, token and connect responses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from ..errors import TwilioError
from ..formats import iso8601, rfc2822
from ..store.members import JOINED


def error_response(err: TwilioError) -> Response:
    """Render a TwilioError as the JSON body of SPEC §2."""
    return Response(
        json.dumps(err.body()),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )


def user_to_json(user: Mapping[str, Any], base_url: str, *, is_online: bool | None = None,
                 is_notifiable: bool | None = None) -> dict[str, Any]:
    """The chat.v2.service.user resource; is_online and is_notifiable are given only where the
    caller knows them (a fetch, SPEC §3/§9)."""
    url = f"{base_url}/v2/Services/{user['service_sid']}/Users/{user['sid']}"
    return {
        "sid": user["sid"],
        "account_sid": user["account_sid"],
        "service_sid": user["service_sid"],
        "role_sid": user["role_sid"],
        "identity": user["identity"],
        "attributes": user["attributes"] if user["attributes"] is not None else "{}",
        "is_online": is_online,
        "is_notifiable": is_notifiable,
        "friendly_name": user["friendly_name"],
        "joined_channels_count": user["joined_channels_count"],
        "date_created": iso8601(user["date_created"]),
        "date_updated": iso8601(user["date_updated"]),
        "links": {"user_channels": f"{url}/Channels", "user_bindings": f"{url}/Bindings"},
        "url": url,
    }


def service_to_json(svc: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """Every field of Twilio's chat.v2.service schema."""
    url = f"{base_url}/v2/Services/{svc['sid']}"
    return {
        "sid": svc["sid"],
        "account_sid": svc["account_sid"],
        "friendly_name": svc["friendly_name"],
        "date_created": iso8601(svc["date_created"]),
        "date_updated": iso8601(svc["date_updated"]),
        "default_service_role_sid": svc["default_service_role_sid"],
        "default_channel_role_sid": svc["default_channel_role_sid"],
        "default_channel_creator_role_sid": svc["default_channel_creator_role_sid"],
        "read_status_enabled": svc["read_status_enabled"],
        "reachability_enabled": svc["reachability_enabled"],
        "typing_indicator_timeout": svc["typing_indicator_timeout"],
        "consumption_report_interval": svc["consumption_report_interval"],
        "limits": json.loads(svc["limits"]),
        "pre_webhook_url": svc["pre_webhook_url"],
        "post_webhook_url": svc["post_webhook_url"],
        "webhook_method": svc["webhook_method"],
        "webhook_filters": json.loads(svc["webhook_filters"]),
        "pre_webhook_retry_count": svc["pre_webhook_retry_count"],
        "post_webhook_retry_count": svc["post_webhook_retry_count"],
        "notifications": json.loads(svc["notifications"]),
        "media": json.loads(svc["media"]),
        "url": url,
        "links": {
            "channels": f"{url}/Channels",
            "roles": f"{url}/Roles",
            "users": f"{url}/Users",
            "bindings": f"{url}/Bindings",
        },
    }


def role_to_json(role: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    return {
        "sid": role["sid"],
        "account_sid": role["account_sid"],
        "service_sid": role["service_sid"],
        "friendly_name": role["friendly_name"],
        "type": role["type"],
        "permissions": json.loads(role["permissions"]),
        "date_created": iso8601(role["date_created"]),
        "date_updated": iso8601(role["date_updated"]),
        "url": f"{base_url}/v2/Services/{role['service_sid']}/Roles/{role['sid']}",
    }


def key_to_json(key: Mapping[str, Any], *, secret: str | None = None) -> dict[str, Any]:
    body = {
        "sid": key["sid"],
        "friendly_name": key["friendly_name"],
        "date_created": rfc2822(key["date_created"]),
        "date_updated": rfc2822(key["date_updated"]),
    }
    if secret is not None:
        body["secret"] = secret
    return body


# Push (SPEC §9): secrets and device addresses are write-only, so neither is ever a key here.
MESSAGE_TYPES = ["removed_from_channel", "new_message", "added_to_channel", "invited_to_channel"]


def credential_to_json(cred: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """The chat.v2.credential resource; `sandbox` as Twilio shows it ("True"/"False", apn only)."""
    sandbox = cred["sandbox"]
    return {
        "sid": cred["sid"],
        "account_sid": cred["account_sid"],
        "friendly_name": cred["friendly_name"],
        "type": cred["type"],
        "sandbox": None if sandbox is None else str(bool(sandbox)),
        "date_created": iso8601(cred["date_created"]),
        "date_updated": iso8601(cred["date_updated"]),
        "url": f"{base_url}/v2/Credentials/{cred['sid']}",
    }


def binding_to_json(binding: Mapping[str, Any], base_url: str, *, of_user: bool = False) -> dict[str, Any]:
    """chat.v2.service.binding, or with `of_user` chat.v2.service.user.user_binding (its user_sid,
    its URL under the user, no links)."""
    service_url = f"{base_url}/v2/Services/{binding['service_sid']}"
    user_url = f"{service_url}/Users/{binding['user_sid']}"
    body: dict[str, Any] = {
        "sid": binding["sid"],
        "account_sid": binding["account_sid"],
        "service_sid": binding["service_sid"],
        "date_created": iso8601(binding["date_created"]),
        "date_updated": iso8601(binding["date_updated"]),
        "endpoint": binding["endpoint"],
        "identity": binding["identity"],
        "credential_sid": binding["credential_sid"],
        "binding_type": binding["binding_type"],
        "message_types": list(MESSAGE_TYPES),
    }
    if of_user:
        body["user_sid"] = binding["user_sid"]
        body["url"] = f"{user_url}/Bindings/{binding['sid']}"
    else:
        body["url"] = f"{service_url}/Bindings/{binding['sid']}"
        body["links"] = {"user": user_url}
    return body


def channel_to_json(ch: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """Every field of chat.v2.service.channel."""
    url = f"{base_url}/v2/Services/{ch['service_sid']}/Channels/{ch['sid']}"
    return {
        "sid": ch["sid"],
        "account_sid": ch["account_sid"],
        "service_sid": ch["service_sid"],
        "friendly_name": ch["friendly_name"],
        "unique_name": ch["unique_name"],
        "attributes": ch["attributes"] if ch["attributes"] is not None else "{}",
        "type": ch["type"],
        "date_created": iso8601(ch["date_created"]),
        "date_updated": iso8601(ch["date_updated"]),
        "created_by": ch["created_by"],
        "members_count": ch["members_count"],
        "messages_count": ch["messages_count"],
        "url": url,
        "links": {"members": f"{url}/Members", "messages": f"{url}/Messages", "invites": f"{url}/Invites",
                  "webhooks": f"{url}/Webhooks", "last_message": None},
    }


def invite_to_json(inv: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """Every field of chat.v2.service.channel.invite."""
    return {
        "sid": inv["sid"],
        "account_sid": inv["account_sid"],
        "channel_sid": inv["channel_sid"],
        "service_sid": inv["service_sid"],
        "identity": inv["identity"],
        "date_created": iso8601(inv["date_created"]),
        "date_updated": iso8601(inv["date_updated"]),
        "role_sid": inv["role_sid"],
        "created_by": inv["created_by"],
        "url": f"{base_url}/v2/Services/{inv['service_sid']}/Channels/{inv['channel_sid']}/Invites/{inv['sid']}",
    }


def member_to_json(m: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """Every field of chat.v2.service.channel.member."""
    return {
        "sid": m["sid"],
        "account_sid": m["account_sid"],
        "channel_sid": m["channel_sid"],
        "service_sid": m["service_sid"],
        "identity": m["identity"],
        "date_created": iso8601(m["date_created"]),
        "date_updated": iso8601(m["date_updated"]),
        "role_sid": m["role_sid"],
        "last_consumed_message_index": m["last_consumed_message_index"],
        "last_consumption_timestamp": (iso8601(m["last_consumption_timestamp"])
                                       if m["last_consumption_timestamp"] is not None else None),
        "url": f"{base_url}/v2/Services/{m['service_sid']}/Channels/{m['channel_sid']}/Members/{m['sid']}",
        "attributes": m["attributes"] if m["attributes"] is not None else "{}",
    }


def user_channel_to_json(m: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """Every field of chat.v2.service.user.user_channel, for a joined or an invited row."""
    joined = m["status"] == JOINED
    channel_url = f"{base_url}/v2/Services/{m['service_sid']}/Channels/{m['channel_sid']}"
    index = m["last_consumed_message_index"]
    return {
        "account_sid": m["account_sid"],
        "service_sid": m["service_sid"],
        "channel_sid": m["channel_sid"],
        "user_sid": m["user_sid"],
        "member_sid": m["sid"] if joined else None,
        "status": m["status"],
        "last_consumed_message_index": index,
        "unread_messages_count": None if index is None else 0,  # no messages exist (SPEC §8)
        "links": {"channel": channel_url, "member": f"{channel_url}/Members/{m['sid']}" if joined else None},
        "url": f"{base_url}/v2/Services/{m['service_sid']}/Users/{m['user_sid']}/Channels/{m['channel_sid']}",
        "notification_level": m["notification_level"],
    }
