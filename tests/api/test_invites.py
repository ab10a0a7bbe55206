"""Invites API (SPEC §8): never provision; 50212, 50404; a member add consumes the invite."""

from __future__ import annotations

from channel_helpers import as_client, channels_url, client_token, invites_url, make_channel, members_url, new_user
from conftest import Api, assert_error

INVITE_FIELDS = {"sid", "account_sid", "channel_sid", "service_sid", "identity", "date_created", "date_updated",
                 "role_sid", "created_by", "url"}


def test_invite_an_existing_user_and_fetch_list_delete(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    new_user(api, service, "ivy")
    r = api.post(invites_url(service, ch), {"Identity": "ivy"})
    assert r.status_code == 201, r.text
    inv = r.json()
    assert set(inv) == INVITE_FIELDS
    assert inv["sid"].startswith("IN") and inv["created_by"] == "system"
    assert inv["role_sid"] == service["default_channel_role_sid"]
    assert api.get(f"{invites_url(service, ch)}/{inv['sid']}").json()["identity"] == "ivy"
    assert [i["sid"] for i in api.get(invites_url(service, ch)).json()["invites"]] == [inv["sid"]]
    assert api.get(invites_url(service, ch), params={"Identity": "other"}).json()["invites"] == []
    assert api.delete(f"{invites_url(service, ch)}/{inv['sid']}").status_code == 204
    assert_error(api.get(f"{invites_url(service, ch)}/{inv['sid']}"), 404, 20404)


def test_invites_never_provision(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    assert_error(api.post(invites_url(service, ch), {"Identity": "stranger"}), 404, 20404)
    assert_error(api.get(f"/v2/Services/{service['sid']}/Users/stranger"), 404, 20404)


def test_already_invited_is_50212_and_already_member_is_50404(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    new_user(api, service, "jo")
    assert api.post(invites_url(service, ch), {"Identity": "jo"}).status_code == 201
    assert_error(api.post(invites_url(service, ch), {"Identity": "jo"}), 409, 50212)
    api.post(members_url(service, ch), {"Identity": "kim"})
    assert_error(api.post(invites_url(service, ch), {"Identity": "kim"}), 409, 50404)
    assert_error(api.post(invites_url(service, ch), {"Identity": "jo", "RoleSid": "RLnope"}), 400, 50101)


def test_member_add_consumes_the_invite_and_takes_its_role(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    new_user(api, service, "lee")
    role = service["default_channel_creator_role_sid"]
    api.post(invites_url(service, ch), {"Identity": "lee", "RoleSid": role})
    m = api.post(members_url(service, ch), {"Identity": "lee"})
    assert m.status_code == 201, m.text
    assert m.json()["role_sid"] == role
    assert api.get(invites_url(service, ch)).json()["invites"] == []


def test_client_invites_with_invitemember_and_joins_private_when_invited(api: Api, service: dict) -> None:
    priv = make_channel(api, service, Type="private")
    new_user(api, service, "max")
    api.post(members_url(service, priv), {"Identity": "ned"})
    ned = client_token(api, service, "ned")
    invited = as_client(api, ned, "POST", invites_url(service, priv), {"Identity": "max"})
    assert invited.status_code == 201, invited.text
    assert invited.json()["created_by"] == "ned"
    max_ = client_token(api, service, "max")
    listed = as_client(api, max_, "GET", channels_url(service) + "?Type=private").json()["channels"]
    assert [c["sid"] for c in listed] == [priv["sid"]]
    joined = as_client(api, max_, "POST", members_url(service, priv), {"Identity": "max"})
    assert joined.status_code == 201, joined.text
    assert api.delete(f"/v2/Services/{service['sid']}/Users/ned").status_code == 204
    assert api.get(f"{channels_url(service)}/{priv['sid']}").json()["members_count"] == 1
