"""The form parameters of a post-event (SPEC §10, Twilio's names), rendered from an outbox row,
and its `X-Twilio-Signature`. Pure: no web framework, no database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

from ..formats import iso8601

# resource column → Twilio parameter, per kind of resource
_USER = (("sid", "UserSid"), ("identity", "Identity"), ("role_sid", "RoleSid"), ("friendly_name", "FriendlyName"),
         ("attributes", "Attributes"))
_CHANNEL = (("sid", "ChannelSid"), ("type", "ChannelType"), ("unique_name", "UniqueName"),
            ("friendly_name", "FriendlyName"), ("attributes", "Attributes"), ("created_by", "CreatedBy"))
_MEMBER = (("sid", "MemberSid"), ("channel_sid", "ChannelSid"), ("identity", "Identity"), ("role_sid", "RoleSid"),
           ("attributes", "Attributes"))


def _fields(event_type: str) -> tuple[tuple[str, str], ...]:
    if event_type.startswith("onUser"):
        return _USER
    if event_type.startswith("onChannel"):
        return _CHANNEL
    return _MEMBER


def render(row: Mapping[str, Any], retry_count: int) -> dict[str, str]:
    """The parameters of one attempt at delivering outbox `row`."""
    data = json.loads(row["data"])
    event_type = row["event_type"]
    params = {"EventType": event_type, "AccountSid": row["account_sid"], "InstanceSid": row["service_sid"],
              "Source": row["source"], "RetryCount": str(retry_count)}
    if row["source"] == "SDK" and row["client_identity"] is not None:
        params["ClientIdentity"] = row["client_identity"]
    for column, name in _fields(event_type):
        value = data.get(column)
        if value is None and column == "attributes":
            value = "{}"  # as the API shows attributes never set
        if value is not None:
            params[name] = str(value)
    for column, name in (("date_created", "DateCreated"), ("date_updated", "DateUpdated")):
        if isinstance(data.get(column), int):
            params[name] = iso8601(data[column])
    if event_type in ("onMemberAdded", "onMemberRemoved"):
        by_self = row["source"] == "SDK" and row["client_identity"] == data.get("identity")
        params["Reason"] = ("JOINED" if by_self else "ADDED") if event_type == "onMemberAdded" else (
            "LEFT" if by_self else "REMOVED")
    return params


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """base64(HMAC-SHA1(auth token, URL + each name and value, names sorted)): what
    twilio.request_validator.RequestValidator accepts (for GET, `url` holds the query and
    `params` is empty)."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*\Z")  # what quote_plus leaves as it is


def _quoted(value: str) -> str:
    return value if _PLAIN.match(value) else quote_plus(value)


def form(params: Mapping[str, str]) -> str:
    """`params` urlencoded as urllib.parse.urlencode does, without its cost for the SIDs and
    names that need no escaping (most of a post-event's values): the form body, or a GET's query."""
    return "&".join(_quoted(name) + "=" + _quoted(value) for name, value in params.items())
