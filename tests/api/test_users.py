"""Users API (SPEC §3) on a real temp database, asserting Twilio codes."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from conftest import Api, assert_error
from tokensvc.store.tables import users

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def users_url(service: dict) -> str:
    return f"/v2/Services/{service['sid']}/Users"


def test_create_user_returns_201_with_every_field(api: Api, service: dict) -> None:
    r = api.post(users_url(service), {"Identity": "alice"})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"sid", "account_sid", "service_sid", "role_sid", "identity", "attributes", "is_online",
                         "is_notifiable", "friendly_name", "joined_channels_count", "date_created",
                         "date_updated", "links", "url"}
    assert re.fullmatch(r"US[0-9a-f]{32}", body["sid"])
    assert body["account_sid"] == api.account_sid
    assert body["role_sid"] == service["default_service_role_sid"]
    assert body["attributes"] == "{}"
    assert body["friendly_name"] is None
    assert body["is_online"] is None and body["is_notifiable"] is None
    assert body["joined_channels_count"] == 0
    assert ISO.fullmatch(body["date_created"]) and ISO.fullmatch(body["date_updated"])
    assert body["url"] == f"http://testserver{users_url(service)}/{body['sid']}"
    assert body["links"] == {"user_channels": body["url"] + "/Channels", "user_bindings": body["url"] + "/Bindings"}


def test_create_user_keeps_attributes_and_friendly_name(api: Api, service: dict) -> None:
    r = api.post(users_url(service), {"Identity": "bob", "Attributes": '{"a": [1, 2]}', "FriendlyName": "Bob"})
    assert r.status_code == 201
    assert r.json()["attributes"] == '{"a": [1, 2]}'
    assert r.json()["friendly_name"] == "Bob"


def test_duplicate_identity_is_409_50201(api: Api, service: dict) -> None:
    assert api.post(users_url(service), {"Identity": "dup"}).status_code == 201
    assert_error(api.post(users_url(service), {"Identity": "dup"}), 409, 50201)


@pytest.mark.parametrize("data, status, code", [
    ({}, 400, 20001),
    ({"Identity": ""}, 400, 20001),
    ({"Identity": "x" * 257}, 400, 50207),
    ({"Identity": "US" + "a" * 32}, 400, 50206),
    ({"Identity": "US" + "A" * 32}, 400, 50206),
    ({"Identity": "u", "Attributes": "{not json"}, 400, 50304),
    ({"Identity": "u", "Attributes": "NaN"}, 400, 50304),
    ({"Identity": "u", "Attributes": json.dumps({"k": "v" * 16400})}, 400, 50303),
    ({"Identity": "u", "FriendlyName": "f" * 257}, 400, 50003),
    ({"Identity": "u", "RoleSid": "garbage"}, 400, 50102),
    ({"Identity": "u", "RoleSid": "RL" + "0" * 32}, 400, 50102),
])
def test_create_user_validation(api: Api, service: dict, data: dict, status: int, code: int) -> None:
    assert_error(api.post(users_url(service), data), status, code)
    # never a half-written record
    assert api.get(users_url(service)).json()["users"] == []


def test_identity_of_256_chars_is_accepted(api: Api, service: dict) -> None:
    assert api.post(users_url(service), {"Identity": "x" * 256}).status_code == 201


def test_channel_role_is_not_a_user_role(api: Api, service: dict) -> None:
    r = api.post(users_url(service), {"Identity": "u", "RoleSid": service["default_channel_role_sid"]})
    assert_error(r, 400, 50102)


def test_role_of_another_service_is_rejected(api: Api, service: dict) -> None:
    other = api.new_service("other")
    r = api.post(users_url(service), {"Identity": "u", "RoleSid": other["default_service_role_sid"]})
    assert_error(r, 400, 50102)


@pytest.mark.parametrize("identity", ["alice@example.com", "a b", "ünï", "a/b", "a+b", "50%", "a?b#c", "a..b",
                                      "x" * 256])
def test_fetch_update_delete_by_url_encoded_identity(api: Api, service: dict, identity: str) -> None:
    created = api.post(users_url(service), {"Identity": identity}).json()
    url = f"{users_url(service)}/{quote(identity, safe='')}"
    fetched = api.get(url)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["sid"] == created["sid"]
    assert fetched.json()["identity"] == identity
    updated = api.post(url, {"FriendlyName": "renamed"})
    assert updated.status_code == 200 and updated.json()["friendly_name"] == "renamed"
    assert updated.json()["identity"] == identity
    assert api.delete(url).status_code == 204
    assert_error(api.get(url), 404, 20404)


def test_unencoded_slash_is_not_the_identity(api: Api, service: dict) -> None:
    api.post(users_url(service), {"Identity": "a/b"})
    assert_error(api.get(f"{users_url(service)}/a/b"), 404, 20404)


def test_fetch_by_sid(api: Api, service: dict) -> None:
    created = api.post(users_url(service), {"Identity": "carol"}).json()
    assert api.get(f"{users_url(service)}/{created['sid']}").json()["identity"] == "carol"


def test_unknown_user_is_404(api: Api, service: dict) -> None:
    assert_error(api.get(f"{users_url(service)}/nobody"), 404, 20404)
    assert_error(api.get(f"{users_url(service)}/US{'0' * 32}"), 404, 20404)


def test_update_changes_only_what_is_given(api: Api, service: dict) -> None:
    created = api.post(users_url(service), {"Identity": "dave", "FriendlyName": "D"}).json()
    url = f"{users_url(service)}/{created['sid']}"
    r = api.post(url, {"Attributes": '{"x":1}'})
    assert r.status_code == 200
    assert r.json()["attributes"] == '{"x":1}' and r.json()["friendly_name"] == "D"
    admin_role = [ro for ro in api.get(f"/v2/Services/{service['sid']}/Roles").json()["roles"]
                  if ro["friendly_name"] == "service admin"][0]
    r = api.post(url, {"RoleSid": admin_role["sid"]})
    assert r.json()["role_sid"] == admin_role["sid"]


def test_empty_update_is_a_no_op_200(api: Api, service: dict) -> None:
    created = api.post(users_url(service), {"Identity": "erin"}).json()
    r = api.post(f"{users_url(service)}/{created['sid']}", {})
    assert r.status_code == 200
    assert r.json() == created


def test_update_identity_is_ignored(api: Api, service: dict) -> None:
    created = api.post(users_url(service), {"Identity": "frank"}).json()
    r = api.post(f"{users_url(service)}/{created['sid']}", {"Identity": "other"})
    assert r.status_code == 200 and r.json()["identity"] == "frank"


@pytest.mark.parametrize("data, code", [
    ({"Attributes": "[1,"}, 50304), ({"FriendlyName": "x" * 300}, 50003), ({"RoleSid": "RLnope"}, 50102),
])
def test_update_validation(api: Api, service: dict, data: dict, code: int) -> None:
    created = api.post(users_url(service), {"Identity": "gina"}).json()
    assert_error(api.post(f"{users_url(service)}/{created['sid']}", data), 400, code)
    assert api.get(f"{users_url(service)}/{created['sid']}").json() == created


def test_delete_frees_identity_and_removes_row(api: Api, service: dict, db) -> None:
    created = api.post(users_url(service), {"Identity": "hank", "Attributes": '{"secret":"pii"}'}).json()
    assert api.delete(f"{users_url(service)}/hank").status_code == 204
    count = db.call(lambda conn: conn.execute(select(func.count()).select_from(users)
                                              .where(users.c.sid == created["sid"])).scalar())
    assert count == 0
    again = api.post(users_url(service), {"Identity": "hank"})
    assert again.status_code == 201 and again.json()["sid"] != created["sid"]
    assert_error(api.delete(f"{users_url(service)}/{created['sid']}"), 404, 20404)


def test_deleted_identity_leaves_no_trace_in_sqlite_files(api: Api, service: dict, settings) -> None:
    if not settings.is_sqlite:
        pytest.skip("SQLite files only")
    marker = "pii-marker-7f3a9c"
    api.post(users_url(service), {"Identity": marker, "Attributes": json.dumps({"m": marker + "-attr"})})
    assert api.delete(f"{users_url(service)}/{marker}").status_code == 204
    path = settings.database_url.removeprefix("sqlite:///")
    import glob

    for f in glob.glob(path + "*"):
        with open(f, "rb") as fh:
            assert marker.encode() not in fh.read(), f


def test_users_of_another_account_are_404(api: Api, service: dict) -> None:
    created = api.post(users_url(service), {"Identity": "ivy"}).json()
    other = api.new_account()
    assert_error(api.get(f"{users_url(service)}/{created['sid']}", auth=other), 404, 20404)
    assert_error(api.get(users_url(service), auth=other), 404, 20404)
    assert_error(api.post(users_url(service), {"Identity": "x"}, auth=other), 404, 20404)
    assert_error(api.delete(f"{users_url(service)}/ivy", auth=other), 404, 20404)


def test_user_channels_and_bindings_are_empty_pages(api: Api, service: dict) -> None:
    created = api.post(users_url(service), {"Identity": "jack"}).json()
    for sub, key in (("Channels", "channels"), ("Bindings", "bindings")):
        r = api.get(f"{users_url(service)}/jack/{sub}", params={"PageSize": 500})
        assert r.status_code == 200
        body = r.json()
        assert body[key] == []
        assert body["meta"]["key"] == key and body["meta"]["page_size"] == 50
        assert body["meta"]["url"].startswith(f"http://testserver{users_url(service)}/{created['sid']}/{sub}")
    assert_error(api.get(f"{users_url(service)}/nobody/Channels"), 404, 20404)
    assert_error(api.get(f"{users_url(service)}/jack/Other"), 404, 20404)
    assert_error(api.post(f"{users_url(service)}/jack/Channels"), 405, 20004)


def test_list_pages_in_creation_order_with_absolute_meta(api: Api, service: dict) -> None:
    made = [api.post(users_url(service), {"Identity": f"user{i:03d}"}).json()["sid"] for i in range(23)]
    seen: list[str] = []
    url = f"{users_url(service)}?PageSize=10"
    pages = 0
    while url:
        r = api.get(url)
        assert r.status_code == 200
        body = r.json()
        meta = body["meta"]
        assert meta["key"] == "users" and meta["page"] == pages and meta["page_size"] == 10
        assert meta["first_page_url"] == f"http://testserver{users_url(service)}?PageSize=10&Page=0"
        assert all(u["is_online"] is None and u["is_notifiable"] is None for u in body["users"])
        seen += [u["sid"] for u in body["users"]]
        if pages:
            assert meta["previous_page_url"].startswith("http://testserver/")
        else:
            assert meta["previous_page_url"] is None
        url = meta["next_page_url"]
        if url:
            assert url.startswith("http://testserver/")
        pages += 1
    assert seen == made and pages == 3


def test_previous_page_url_goes_back(api: Api, service: dict) -> None:
    made = [api.post(users_url(service), {"Identity": f"p{i}"}).json()["sid"] for i in range(7)]
    first = api.get(users_url(service), params={"PageSize": 3}).json()
    second = api.get(first["meta"]["next_page_url"]).json()
    third = api.get(second["meta"]["next_page_url"]).json()
    assert [u["sid"] for u in third["users"]] == made[6:]
    assert third["meta"]["next_page_url"] is None
    back = api.get(third["meta"]["previous_page_url"]).json()
    assert [u["sid"] for u in back["users"]] == made[3:6]
    assert back["meta"]["page"] == 1


def test_page_size_above_100_is_clamped(api: Api, service: dict) -> None:
    assert api.get(users_url(service), params={"PageSize": 1000}).json()["meta"]["page_size"] == 100
    assert api.get(users_url(service), params={"PageSize": 10**30}).json()["meta"]["page_size"] == 100


@pytest.mark.parametrize("params, code", [
    ({"PageSize": "abc"}, 20001), ({"PageSize": "0"}, 20001), ({"PageSize": "-5"}, 20001),
    ({"PageSize": "1.5"}, 20001), ({"Page": "-1"}, 20001), ({"Page": "x"}, 20001),
    ({"PageToken": "garbage"}, 21481), ({"PageToken": "PT!!!"}, 21481), ({"PageToken": "PTbm90YW51bWJlcg"}, 21481),
    ({"Page": "999999999"}, 20001),
])
def test_bad_paging_parameters(api: Api, service: dict, params: dict, code: int) -> None:
    assert_error(api.get(users_url(service), params=params), 400, code)


def test_public_url_setting_builds_links(tmp_path) -> None:
    from starlette.testclient import TestClient

    from conftest import database_url
    from tokensvc.app import create_app
    from tokensvc.config import Settings
    from tokensvc.store.accounts import create_account

    app = create_app(Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "k",
                              public_url="https://chat.example.com"))
    acc = app.state.ctx.db.call(lambda conn: create_account(conn))
    with TestClient(app) as client:
        svc = client.post("/v2/Services", data={"FriendlyName": "s"}, auth=(acc.sid, acc.auth_token)).json()
        assert svc["url"] == f"https://chat.example.com/v2/Services/{svc['sid']}"
