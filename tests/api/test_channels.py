"""Channels API (SPEC §8) on a real temp database, asserting Twilio codes."""

from __future__ import annotations

import re

from channel_helpers import as_client, channels_url, client_token, make_channel
from conftest import Api, assert_error

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
CHANNEL_FIELDS = {"sid", "account_sid", "service_sid", "friendly_name", "unique_name", "attributes", "type",
                  "date_created", "date_updated", "created_by", "members_count", "messages_count", "url", "links"}


def test_create_channel_returns_every_field_with_defaults(api: Api, service: dict) -> None:
    body = make_channel(api, service)
    assert set(body) == CHANNEL_FIELDS
    assert re.fullmatch(r"CH[0-9a-f]{32}", body["sid"])
    assert (body["friendly_name"], body["unique_name"], body["attributes"]) == (None, None, "{}")
    counts = (body["type"], body["created_by"], body["members_count"], body["messages_count"])
    assert counts == ("public", "system", 0, 0)
    assert ISO.fullmatch(body["date_created"]) and ISO.fullmatch(body["date_updated"])
    url = f"http://testserver{channels_url(service)}/{body['sid']}"
    assert body["url"] == url
    assert body["links"] == {"members": f"{url}/Members", "messages": f"{url}/Messages", "invites": f"{url}/Invites",
                             "webhooks": f"{url}/Webhooks", "last_message": None}


def test_create_channel_keeps_every_parameter(api: Api, service: dict) -> None:
    body = make_channel(api, service, FriendlyName="General", UniqueName="general", Attributes='{"a": 1}',
                        Type="private", DateCreated="2016-03-24T21:05:19Z", DateUpdated="2016-03-25T00:00:00Z",
                        CreatedBy="alice")
    assert (body["friendly_name"], body["unique_name"], body["attributes"], body["type"]) == (
        "General", "general", '{"a": 1}', "private")
    assert (body["date_created"], body["date_updated"], body["created_by"]) == (
        "2016-03-24T21:05:19Z", "2016-03-25T00:00:00Z", "alice")


def test_create_channel_refuses_bad_values_with_their_codes(api: Api, service: dict) -> None:
    url = channels_url(service)
    assert_error(api.post(url, {"FriendlyName": "x" * 257}), 400, 50003)
    assert_error(api.post(url, {"UniqueName": "x" * 257}), 400, 50004)
    assert_error(api.post(url, {"UniqueName": "CH" + "0" * 32}), 400, 50306)
    assert_error(api.post(url, {"Attributes": "{nope"}), 400, 50304)
    assert_error(api.post(url, {"Attributes": '"' + "x" * 17000 + '"'}), 400, 50303)
    assert_error(api.post(url, {"Type": "secret"}), 400, 20001)
    assert_error(api.post(url, {"DateCreated": "yesterday"}), 400, 50308)
    assert_error(api.post(url, {"DateUpdated": "2016-13-45"}), 400, 50309)
    assert api.get(url, params={"Type": ["public", "private"]}).json()["channels"] == []


def test_unique_name_taken_is_409_50307_on_create_and_update(api: Api, service: dict) -> None:
    make_channel(api, service, UniqueName="room")
    assert_error(api.post(channels_url(service), {"UniqueName": "room"}), 409, 50307)
    other = make_channel(api, service, UniqueName="other")
    assert_error(api.post(f"{channels_url(service)}/{other['sid']}", {"UniqueName": "room"}), 409, 50307)


def test_fetch_update_delete_by_sid_and_unique_name(api: Api, service: dict) -> None:
    ch = make_channel(api, service, UniqueName="a/b c")
    by_name = f"{channels_url(service)}/a%2Fb%20c"
    assert api.get(by_name).json()["sid"] == ch["sid"]
    assert api.get(f"{channels_url(service)}/{ch['sid']}").json()["unique_name"] == "a/b c"
    updated = api.post(by_name, {"FriendlyName": "Renamed", "Attributes": "[1]"})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["friendly_name"], updated.json()["attributes"]) == ("Renamed", "[1]")
    assert api.post(by_name, {"UniqueName": "moved"}).json()["unique_name"] == "moved"
    assert_error(api.get(by_name), 404, 20404)
    assert api.delete(f"{channels_url(service)}/moved").status_code == 204
    assert_error(api.get(f"{channels_url(service)}/{ch['sid']}"), 404, 20404)
    assert_error(api.delete(f"{channels_url(service)}/{ch['sid']}"), 404, 20404)


def test_update_without_parameters_is_50347(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    assert_error(api.post(f"{channels_url(service)}/{ch['sid']}", {}), 400, 50347)
    assert_error(api.post(f"{channels_url(service)}/{ch['sid']}", {"DateUpdated": "x"}), 400, 50309)


def test_list_filters_by_type_repeated_and_defaults_to_public(api: Api, service: dict) -> None:
    pub = [make_channel(api, service)["sid"] for _ in range(3)]
    priv = [make_channel(api, service, Type="private")["sid"] for _ in range(2)]
    url = channels_url(service)
    assert [c["sid"] for c in api.get(url).json()["channels"]] == pub
    assert [c["sid"] for c in api.get(url, params={"Type": "private"}).json()["channels"]] == priv
    both = api.get(url, params={"Type": ["public", "private"], "PageSize": 2}).json()
    seen = [c["sid"] for c in both["channels"]]
    while both["meta"]["next_page_url"]:
        both = api.get(both["meta"]["next_page_url"]).json()
        seen += [c["sid"] for c in both["channels"]]
    assert seen == sorted(pub + priv, key=(pub + priv).index)
    assert_error(api.get(url, params={"Type": "other"}), 400, 20001)


def test_messages_and_webhooks_are_out_of_scope(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    for sub in ("Messages", "Webhooks"):
        assert_error(api.get(f"{channels_url(service)}/{ch['sid']}/{sub}"), 404, 20404)
    assert_error(api.client.request("PUT", f"{channels_url(service)}/{ch['sid']}", auth=api.auth), 405, 20004)


def test_another_accounts_channels_are_404(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    other = api.new_account()
    assert_error(api.get(f"{channels_url(service)}/{ch['sid']}", auth=other), 404, 20404)
    assert_error(api.post(channels_url(service), {}, auth=other), 404, 20404)


def test_client_creates_with_createchannel_and_is_created_by(api: Api, service: dict) -> None:
    alice = client_token(api, service, "alice")
    r = as_client(api, alice, "POST", channels_url(service), {"FriendlyName": "mine"})
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == "alice"
    assert_error(as_client(api, alice, "POST", channels_url(service), {"CreatedBy": "bob"}), 403, 20403)
    assert_error(as_client(api, alice, "POST", channels_url(service), {"DateCreated": "2016-03-24T21:05:19Z"}),
                 403, 20403)
    # the service user role cannot rename or destroy a channel it is not admin of
    ch = make_channel(api, service)
    assert_error(as_client(api, alice, "POST", f"{channels_url(service)}/{ch['sid']}", {"FriendlyName": "x"}),
                 403, 20403)
    assert_error(as_client(api, alice, "DELETE", f"{channels_url(service)}/{ch['sid']}"), 403, 20403)


def test_custom_role_without_createchannel_cannot_create(api: Api, service: dict) -> None:
    role = api.post(f"/v2/Services/{service['sid']}/Roles",
                    {"FriendlyName": "reader", "Type": "deployment", "Permission": "joinChannel"}).json()
    api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "reader", "RoleSid": role["sid"]})
    reader = client_token(api, service, "reader")
    assert_error(as_client(api, reader, "POST", channels_url(service), {"FriendlyName": "x"}), 403, 20403)


def test_client_sees_public_channels_and_private_ones_it_belongs_to(api: Api, service: dict) -> None:
    pub = make_channel(api, service)
    hidden = make_channel(api, service, Type="private")
    mine = make_channel(api, service, Type="private")
    api.post(f"{channels_url(service)}/{mine['sid']}/Members", {"Identity": "carol"})
    carol = client_token(api, service, "carol")
    listed = as_client(api, carol, "GET", channels_url(service) + "?Type=public&Type=private").json()["channels"]
    assert [c["sid"] for c in listed] == [pub["sid"], mine["sid"]]
    assert_error(as_client(api, carol, "GET", f"{channels_url(service)}/{hidden['sid']}"), 403, 20403)
    assert as_client(api, carol, "GET", f"{channels_url(service)}/{mine['sid']}").status_code == 200
    assert_error(as_client(api, carol, "GET", f"{channels_url(service)}/{hidden['sid']}/Members"), 403, 20403)


def test_channel_admin_member_role_grants_channel_permissions(api: Api, service: dict) -> None:
    alice = client_token(api, service, "alice")
    ch = as_client(api, alice, "POST", channels_url(service), {"FriendlyName": "mine"}).json()
    joined = as_client(api, alice, "POST", f"{channels_url(service)}/{ch['sid']}/Members", {"Identity": "alice"})
    assert joined.status_code == 201, joined.text
    assert joined.json()["role_sid"] == service["default_channel_creator_role_sid"]
    renamed = as_client(api, alice, "POST", f"{channels_url(service)}/{ch['sid']}", {"FriendlyName": "ours"})
    assert renamed.status_code == 200, renamed.text
    assert as_client(api, alice, "DELETE", f"{channels_url(service)}/{ch['sid']}").status_code == 204
