"""Helpers the channel, member, invite and user-channel tests share."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import Api


def channels_url(service: dict) -> str:
    return f"/v2/Services/{service['sid']}/Channels"


def members_url(service: dict, channel: dict) -> str:
    return f"{channels_url(service)}/{channel['sid']}/Members"


def invites_url(service: dict, channel: dict) -> str:
    return f"{channels_url(service)}/{channel['sid']}/Invites"


def make_channel(api: Api, service: dict, **params: Any) -> dict[str, Any]:
    r = api.post(channels_url(service), params)
    assert r.status_code == 201, r.text
    return r.json()


def new_user(api: Api, service: dict, identity: str) -> dict:
    r = api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": identity})
    assert r.status_code == 201, r.text
    return r.json()


def client_token(api: Api, service: dict, identity: str) -> dict[str, str]:
    r = api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": identity})
    assert r.status_code == 201, r.text
    return {"X-Twilio-Token": r.json()["token"]}


def as_client(api: Api, headers: dict[str, str], method: str, url: str, data: Any = None) -> httpx.Response:
    return api.client.request(method, url, data=data, headers=headers)
