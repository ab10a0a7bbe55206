"""Client principals (SPEC §5 HTTP): what a bearer of `X-Twilio-Token` may and may not do."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from blackbox.blackbox_helpers import (
    BB,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
)


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    return bb.new_service("clients")


@pytest.fixture(scope="module")
def roles(bb: BB, svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return bb.roles(svc["sid"])


@pytest.fixture(scope="module")
def victim(bb: BB, svc: dict[str, Any]) -> dict[str, Any]:
    return bb.new_user(svc["sid"], "victim")


def as_client(bb: BB, svc: dict[str, Any], identity: str) -> httpx.Client:
    token = bb.token(svc["sid"], identity)["token"]
    return bb.client(headers={"X-Twilio-Token": token})


def users(svc: dict[str, Any], ref: str = "") -> str:
    return f"/v2/Services/{svc['sid']}/Users" + (f"/{ref}" if ref else "")


def test_client_may_read_users_of_its_service(bb: BB, svc: dict[str, Any]) -> None:
    bb.new_user(svc["sid"], "bystander")
    c = as_client(bb, svc, "reader")
    me = c.get(users(svc, "reader"))
    assert me.status_code == 200 and me.json()["identity"] == "reader"
    other = c.get(users(svc, "bystander"))
    assert other.status_code == 200 and other.json()["identity"] == "bystander"
    by_sid = c.get(users(svc, other.json()["sid"]))
    assert by_sid.status_code == 200
    listed = c.get(users(svc), params={"PageSize": 100})
    assert listed.status_code == 200
    assert {"reader", "bystander"} <= {u["identity"] for u in listed.json()["users"]}
    assert c.get(users(svc, "reader") + "/Channels").status_code == 200
    assert_error(c.get(users(svc, "nobody-here")), 404, 20404)


def test_client_may_update_own_friendly_name_and_attributes(bb: BB, svc: dict[str, Any]) -> None:
    c = as_client(bb, svc, "self-editor")
    r = c.post(users(svc, "self-editor"), data={"FriendlyName": "Me!", "Attributes": '{"mood": "ok"}'})
    assert r.status_code == 200, r.text
    assert r.json()["friendly_name"] == "Me!"
    assert json.loads(r.json()["attributes"]) == {"mood": "ok"}
    sid = r.json()["sid"]
    r = c.post(users(svc, sid), data={"FriendlyName": "Me again"})
    assert r.status_code == 200 and r.json()["friendly_name"] == "Me again"
    assert bb.http.get(users(svc, "self-editor")).json()["friendly_name"] == "Me again"


def test_client_self_update_still_validates(bb: BB, svc: dict[str, Any]) -> None:
    c = as_client(bb, svc, "self-validator")
    assert_error(c.post(users(svc, "self-validator"), data={"Attributes": "{x"}), 400, 50304)
    assert_error(c.post(users(svc, "self-validator"), data={"FriendlyName": "z" * 257}), 400, 50003)


def test_client_may_not_change_roles_even_its_own(bb: BB, svc: dict[str, Any], roles: dict[str, Any]) -> None:
    c = as_client(bb, svc, "climber")
    before = bb.http.get(users(svc, "climber")).json()
    r = c.post(users(svc, "climber"), data={"RoleSid": roles["service admin"]["sid"]})
    assert_error(r, 403, 20403)
    r = c.post(users(svc, "climber"), data={"RoleSid": roles["service admin"]["sid"], "FriendlyName": "sneaky"})
    assert_error(r, 403, 20403)
    assert bb.http.get(users(svc, "climber")).json() == before


def test_service_user_may_not_edit_another_user(bb: BB, svc: dict[str, Any]) -> None:
    target = bb.new_user(svc["sid"], "target", FriendlyName="Target")
    c = as_client(bb, svc, "meddler")
    assert_error(c.post(users(svc, "target"), data={"FriendlyName": "pwned"}), 403, 20403)
    assert_error(c.post(users(svc, target["sid"]), data={"Attributes": '{"pwned": true}'}), 403, 20403)
    assert bb.http.get(users(svc, "target")).json()["friendly_name"] == "Target"


def test_user_with_edit_any_user_info_may_edit_others_but_not_roles(bb: BB, svc: dict[str, Any],
                                                                    roles: dict[str, Any]) -> None:
    bb.new_user(svc["sid"], "moderator", RoleSid=roles["service admin"]["sid"])
    bb.new_user(svc["sid"], "moderated")
    c = as_client(bb, svc, "moderator")
    r = c.post(users(svc, "moderated"), data={"FriendlyName": "Renamed by mod"})
    assert r.status_code == 200, r.text
    assert r.json()["friendly_name"] == "Renamed by mod"
    assert_error(c.post(users(svc, "moderated"), data={"RoleSid": roles["service admin"]["sid"]}), 403, 20403)
    # service admin lacks editOwnUserInfo in Twilio's defaults, but editAnyUserInfo covers anyone.
    r = c.post(users(svc, "moderator"), data={"FriendlyName": "Mod"})
    assert r.status_code == 200, r.text


def test_custom_role_without_edit_own_user_info_may_not_edit_itself(bb: BB, svc: dict[str, Any]) -> None:
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles",
                     data={"FriendlyName": "read-only", "Type": "deployment", "Permission": "joinChannel"})
    assert r.status_code == 201, r.text
    bb.new_user(svc["sid"], "muted", RoleSid=r.json()["sid"])
    c = as_client(bb, svc, "muted")
    assert c.get(users(svc, "muted")).status_code == 200
    assert_error(c.post(users(svc, "muted"), data={"FriendlyName": "let me"}), 403, 20403)


def test_role_permission_change_takes_effect(bb: BB, svc: dict[str, Any]) -> None:
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles",
                     data={"FriendlyName": f"flip-{uuid.uuid4().hex[:6]}", "Type": "deployment",
                           "Permission": "joinChannel"})
    role = r.json()["sid"]
    bb.new_user(svc["sid"], "flipper", RoleSid=role)
    c = as_client(bb, svc, "flipper")
    assert_error(c.post(users(svc, "flipper"), data={"FriendlyName": "no"}), 403, 20403)
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles/{role}", data={"Permission": "editOwnUserInfo"})
    assert r.status_code == 200
    assert c.post(users(svc, "flipper"), data={"FriendlyName": "yes"}).status_code == 200


@pytest.mark.parametrize("method, path, data", [
    ("POST", "/v2/Services/{IS}/Users", {"Identity": "made-by-client"}),
    ("DELETE", "/v2/Services/{IS}/Users/victim", None),
    ("DELETE", "/v2/Services/{IS}/Users/limited", None),
    ("GET", "/v2/Services", None),
    ("POST", "/v2/Services", {"FriendlyName": "client-svc"}),
    ("GET", "/v2/Services/{IS}", None),
    ("POST", "/v2/Services/{IS}", {"FriendlyName": "renamed"}),
    ("DELETE", "/v2/Services/{IS}", None),
    ("GET", "/v2/Services/{IS}/Roles", None),
    ("POST", "/v2/Services/{IS}/Roles", {"FriendlyName": "r", "Type": "deployment", "Permission": "joinChannel"}),
    ("GET", "/v2/Services/{IS}/Roles/{RL}", None),
    ("POST", "/v2/Services/{IS}/Roles/{RL}", {"Permission": "editAnyUserInfo"}),
    ("DELETE", "/v2/Services/{IS}/Roles/{RL}", None),
    ("POST", "/v2/Services/{IS}/Tokens", {"Identity": "other"}),
    ("GET", "/2010-04-01/Accounts/{AC}/Keys.json", None),
    ("POST", "/2010-04-01/Accounts/{AC}/Keys.json", {"FriendlyName": "k"}),
])
def test_client_is_403_for_everything_else(bb: BB, svc: dict[str, Any], roles: dict[str, Any],
                                           victim: dict[str, Any], method: str, path: str,
                                           data: dict[str, str] | None) -> None:
    c = as_client(bb, svc, "limited")
    path = (path.replace("{IS}", svc["sid"]).replace("{RL}", roles["service user"]["sid"])
            .replace("{AC}", bb.account_sid))
    r = c.request(method, path, data=data)
    assert_error(r, 403, 20403)
    # Nothing happened.
    assert bb.http.get(f"/v2/Services/{svc['sid']}").status_code == 200
    assert bb.http.get(users(svc, "victim")).status_code == 200
    assert bb.http.get(users(svc, "limited")).status_code == 200
    assert_error(bb.http.get(users(svc, "made-by-client")), 404, 20404)
    assert bb.roles(svc["sid"])["service user"]["permissions"] == roles["service user"]["permissions"]


def test_client_token_does_not_leak_into_other_services(bb: BB, svc: dict[str, Any]) -> None:
    other = bb.new_service("other-clients")
    bb.new_user(other["sid"], "outsider")
    c = as_client(bb, svc, "insider")
    assert_error(c.get(users(other, "outsider")), 401, 20101)
    assert_error(c.get(users(other)), 401, 20101)
