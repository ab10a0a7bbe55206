"""Members API (SPEC §8): provisioning on add, codes, role defaults, counts and cascades."""

from __future__ import annotations

from sqlalchemy import func, select

from channel_helpers import as_client, channels_url, client_token, make_channel, members_url
from conftest import Api, assert_error
from tokensvc.db import Database
from tokensvc.store.tables import users

MEMBER_FIELDS = {"sid", "account_sid", "channel_sid", "service_sid", "identity", "date_created", "date_updated",
                 "role_sid", "last_consumed_message_index", "last_consumption_timestamp", "url", "attributes"}


def user(api: Api, service: dict, key: str) -> dict:
    r = api.get(f"/v2/Services/{service['sid']}/Users/{key}")
    assert r.status_code == 200, r.text
    return r.json()


def test_adding_a_new_identity_creates_its_user_with_the_default_role(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    r = api.post(members_url(service, ch), {"Identity": "new/one"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == MEMBER_FIELDS
    assert body["sid"].startswith("MB") and body["identity"] == "new/one"
    assert body["role_sid"] == service["default_channel_role_sid"]
    assert (body["attributes"], body["last_consumed_message_index"], body["last_consumption_timestamp"]) == (
        "{}", None, None)
    assert body["url"] == f"http://testserver{members_url(service, ch)}/{body['sid']}"
    made = user(api, service, "new%2Fone")
    assert made["role_sid"] == service["default_service_role_sid"]
    assert made["joined_channels_count"] == 1
    assert api.get(f"{channels_url(service)}/{ch['sid']}").json()["members_count"] == 1


def test_member_parameters_are_kept_and_checked(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    url = members_url(service, ch)
    admin_role = service["default_channel_creator_role_sid"]
    r = api.post(url, {"Identity": "m", "RoleSid": admin_role, "Attributes": '{"x": 1}',
                       "LastConsumedMessageIndex": "3", "LastConsumptionTimestamp": "2020-01-02T03:04:05Z",
                       "DateCreated": "2019-01-01T00:00:00Z", "DateUpdated": "2019-01-02T00:00:00Z"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["role_sid"], body["attributes"], body["last_consumed_message_index"]) == (admin_role, '{"x": 1}', 3)
    assert (body["last_consumption_timestamp"], body["date_created"], body["date_updated"]) == (
        "2020-01-02T03:04:05Z", "2019-01-01T00:00:00Z", "2019-01-02T00:00:00Z")
    assert_error(api.post(url, {}), 400, 20001)
    assert_error(api.post(url, {"Identity": "x" * 257}), 400, 50207)
    assert_error(api.post(url, {"Identity": "US" + "a" * 32}), 400, 50206)
    assert_error(api.post(url, {"Identity": "r", "RoleSid": service["default_service_role_sid"]}), 400, 50101)
    assert_error(api.post(url, {"Identity": "r", "RoleSid": "nope"}), 400, 50101)
    assert_error(api.post(url, {"Identity": "r", "LastConsumedMessageIndex": "-1"}), 400, 50406)
    assert_error(api.post(url, {"Identity": "r", "LastConsumptionTimestamp": "soon"}), 400, 50405)
    assert_error(api.post(url, {"Identity": "r", "DateCreated": "x"}), 400, 50308)
    assert_error(api.post(url, {"Identity": "r", "Attributes": "{"}), 400, 50304)
    assert_error(api.get(f"/v2/Services/{service['sid']}/Users/r"), 404, 20404)  # no refusal left a user


def test_already_a_member_is_409_50404(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    assert api.post(members_url(service, ch), {"Identity": "dup"}).status_code == 201
    assert_error(api.post(members_url(service, ch), {"Identity": "dup"}), 409, 50404)
    assert user(api, service, "dup")["joined_channels_count"] == 1


def test_limit_refusals_leave_no_user_behind(api: Api, service: dict, db: Database) -> None:
    svc = service["sid"]
    limited = api.post(f"/v2/Services/{svc}", {"Limits.ChannelMembers": "1", "Limits.UserChannels": "2"})
    assert limited.status_code == 200, limited.text
    full = make_channel(api, service)
    assert api.post(members_url(service, full), {"Identity": "first"}).status_code == 201
    assert_error(api.post(members_url(service, full), {"Identity": "ghost"}), 400, 50403)
    assert_error(api.get(f"/v2/Services/{svc}/Users/ghost"), 404, 20404)
    a, b = make_channel(api, service), make_channel(api, service)
    assert api.post(members_url(service, a), {"Identity": "busy"}).status_code == 201
    assert api.post(members_url(service, b), {"Identity": "busy"}).status_code == 201
    assert_error(api.post(members_url(service, make_channel(api, service)), {"Identity": "busy"}), 400, 50208)
    assert user(api, service, "busy")["joined_channels_count"] == 2
    count = db.call(lambda conn: conn.execute(select(func.count()).select_from(users)
                                              .where(users.c.service_sid == svc)).scalar())
    assert count == 2


def test_creator_gets_the_creator_role_and_others_the_default(api: Api, service: dict) -> None:
    ch = make_channel(api, service, CreatedBy="owner")
    assert api.post(members_url(service, ch), {"Identity": "owner"}).json()["role_sid"] == \
        service["default_channel_creator_role_sid"]
    assert api.post(members_url(service, ch), {"Identity": "guest"}).json()["role_sid"] == \
        service["default_channel_role_sid"]


def test_fetch_update_delete_by_sid_and_identity(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    url = members_url(service, ch)
    m = api.post(url, {"Identity": "a b/c"}).json()
    assert api.get(f"{url}/a%20b%2Fc").json()["sid"] == m["sid"]
    assert api.get(f"{url}/{m['sid']}").json()["identity"] == "a b/c"
    r = api.post(f"{url}/a%20b%2Fc", {"Attributes": '{"k": 2}', "LastConsumedMessageIndex": "5",
                                      "RoleSid": service["default_channel_creator_role_sid"]})
    assert r.status_code == 200, r.text
    assert (r.json()["attributes"], r.json()["last_consumed_message_index"], r.json()["role_sid"]) == (
        '{"k": 2}', 5, service["default_channel_creator_role_sid"])
    assert_error(api.post(f"{url}/{m['sid']}", {"RoleSid": service["default_service_role_sid"]}), 400, 50101)
    assert api.delete(f"{url}/{m['sid']}").status_code == 204
    assert_error(api.get(f"{url}/{m['sid']}"), 404, 20404)
    assert user(api, service, "a%20b%2Fc")["joined_channels_count"] == 0
    assert api.get(f"{channels_url(service)}/{ch['sid']}").json()["members_count"] == 0


def test_list_filters_by_identity_repeated(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    url = members_url(service, ch)
    for name in ("a", "b", "c"):
        api.post(url, {"Identity": name})
    assert [m["identity"] for m in api.get(url).json()["members"]] == ["a", "b", "c"]
    assert [m["identity"] for m in api.get(url, params={"Identity": ["c", "a"]}).json()["members"]] == ["a", "c"]
    page = api.get(url, params={"Identity": ["a", "b"], "PageSize": 1}).json()
    assert "Identity=a" in page["meta"]["next_page_url"]
    assert [m["identity"] for m in api.get(page["meta"]["next_page_url"]).json()["members"]] == ["b"]


def test_counts_after_channel_and_user_deletion(api: Api, service: dict) -> None:
    chans = [make_channel(api, service, CreatedBy="zed") for _ in range(3)]
    for ch in chans:
        for name in ("zed", "yan"):
            assert api.post(members_url(service, ch), {"Identity": name}).status_code == 201
    assert user(api, service, "yan")["joined_channels_count"] == 3
    assert api.delete(f"{channels_url(service)}/{chans[0]['sid']}").status_code == 204
    assert user(api, service, "yan")["joined_channels_count"] == 2
    assert user(api, service, "zed")["joined_channels_count"] == 2
    assert api.delete(f"/v2/Services/{service['sid']}/Users/zed").status_code == 204
    for ch in chans[1:]:
        after = api.get(f"{channels_url(service)}/{ch['sid']}").json()
        assert (after["members_count"], after["created_by"]) == (1, "system")
    assert [m["identity"] for m in api.get(members_url(service, chans[1])).json()["members"]] == ["yan"]


def test_a_channel_role_in_use_by_a_member_cannot_be_deleted(api: Api, service: dict) -> None:
    roles = f"/v2/Services/{service['sid']}/Roles"
    role = api.post(roles, {"FriendlyName": "mod", "Type": "channel", "Permission": "leaveChannel"}).json()
    ch = make_channel(api, service)
    m = api.post(members_url(service, ch), {"Identity": "mo", "RoleSid": role["sid"]}).json()
    assert_error(api.delete(f"{roles}/{role['sid']}"), 409, 50100)
    assert api.delete(f"{members_url(service, ch)}/{m['sid']}").status_code == 204
    assert api.delete(f"{roles}/{role['sid']}").status_code == 204


def test_service_deletion_takes_channels_and_members(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    api.post(members_url(service, ch), {"Identity": "gone"})
    assert api.delete(f"/v2/Services/{service['sid']}").status_code == 204
    assert_error(api.get(f"{channels_url(service)}/{ch['sid']}"), 404, 20404)


def test_client_joins_public_cannot_add_others_or_join_private_uninvited(api: Api, service: dict) -> None:
    pub = make_channel(api, service)
    priv = make_channel(api, service, Type="private")
    dan = client_token(api, service, "dan")
    joined = as_client(api, dan, "POST", members_url(service, pub), {"Identity": "dan"})
    assert joined.status_code == 201, joined.text
    assert_error(as_client(api, dan, "POST", members_url(service, pub), {"Identity": "eve"}), 403, 20403)
    assert_error(api.get(f"/v2/Services/{service['sid']}/Users/eve"), 404, 20404)
    assert_error(as_client(api, dan, "POST", members_url(service, priv), {"Identity": "dan"}), 403, 20403)
    assert_error(as_client(api, dan, "POST", members_url(service, pub), {"Identity": "dan", "RoleSid":
                                                                         service["default_channel_role_sid"]}),
                 403, 20403)
    # channel user: editOwnMemberAttributes, leaveChannel
    own = as_client(api, dan, "POST", f"{members_url(service, pub)}/dan", {"Attributes": '{"me": 1}'})
    assert own.status_code == 200, own.text
    api.post(members_url(service, pub), {"Identity": "fay"})
    assert_error(as_client(api, dan, "POST", f"{members_url(service, pub)}/fay", {"Attributes": "{}"}), 403, 20403)
    assert_error(as_client(api, dan, "DELETE", f"{members_url(service, pub)}/fay"), 403, 20403)
    assert as_client(api, dan, "DELETE", f"{members_url(service, pub)}/dan").status_code == 204
