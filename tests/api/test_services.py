"""Services and Roles (SPEC §3) on a real temp database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Api, assert_error

SERVICE_FIELDS = {
    "sid", "account_sid", "friendly_name", "date_created", "date_updated", "default_service_role_sid",
    "default_channel_role_sid", "default_channel_creator_role_sid", "read_status_enabled",
    "reachability_enabled", "typing_indicator_timeout", "consumption_report_interval", "limits",
    "pre_webhook_url", "post_webhook_url", "webhook_method", "webhook_filters", "pre_webhook_retry_count",
    "post_webhook_retry_count", "notifications", "media", "url", "links",
}


def test_service_has_every_field_of_the_twilio_schema(api: Api) -> None:
    ref = Path(__file__).resolve().parents[3] / "shared/reference/twilio_chat_v2.json"
    reference = json.loads(ref.read_text()) if ref.exists() else None
    svc = api.new_service("chat")
    assert set(svc) == SERVICE_FIELDS
    if reference:
        assert set(reference["components"]["schemas"]["chat.v2.service"]["properties"]) == SERVICE_FIELDS
    assert svc["friendly_name"] == "chat" and svc["reachability_enabled"] is False
    assert svc["links"]["users"] == svc["url"] + "/Users"


def test_create_service_makes_the_four_default_roles(api: Api) -> None:
    svc = api.new_service()
    roles = api.get(f"/v2/Services/{svc['sid']}/Roles").json()["roles"]
    by_name = {r["friendly_name"]: r for r in roles}
    assert set(by_name) == {"service admin", "service user", "channel admin", "channel user"}
    assert by_name["service admin"]["type"] == by_name["service user"]["type"] == "deployment"
    assert by_name["channel admin"]["type"] == by_name["channel user"]["type"] == "channel"
    assert svc["default_service_role_sid"] == by_name["service user"]["sid"]
    assert svc["default_channel_role_sid"] == by_name["channel user"]["sid"]
    assert svc["default_channel_creator_role_sid"] == by_name["channel admin"]["sid"]
    assert set(by_name["service user"]["permissions"]) == {"createChannel", "joinChannel", "editOwnUserInfo"}
    assert "editAnyUserInfo" in by_name["service admin"]["permissions"]
    assert "sendMessage" in by_name["channel user"]["permissions"]


def test_service_requires_friendly_name(api: Api) -> None:
    assert_error(api.post("/v2/Services", {}), 400, 20001)
    assert_error(api.post("/v2/Services", {"FriendlyName": "x" * 300}), 400, 50003)


def test_update_service_fields(api: Api) -> None:
    svc = api.new_service()
    roles = api.get(f"/v2/Services/{svc['sid']}/Roles").json()["roles"]
    admin = [r for r in roles if r["friendly_name"] == "service admin"][0]
    r = api.post(svc["url"].removeprefix("http://testserver"), {
        "FriendlyName": "renamed", "ReachabilityEnabled": "true", "ReadStatusEnabled": "False",
        "TypingIndicatorTimeout": "9", "DefaultServiceRoleSid": admin["sid"],
        "PostWebhookUrl": "https://hooks.example.com/post", "WebhookMethod": "GET",
        "WebhookFilters": ["onMessageSent", "onUserUpdated"], "Notifications.NewMessage.Enabled": "true",
        "Notifications.NewMessage.Template": "hi", "Limits.ChannelMembers": "500",
        "Media.CompatibilityMessage": "media!", "PreWebhookRetryCount": "2",
    })
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["friendly_name"] == "renamed" and body["reachability_enabled"] is True
    assert body["read_status_enabled"] is False and body["typing_indicator_timeout"] == 9
    assert body["default_service_role_sid"] == admin["sid"]
    assert body["post_webhook_url"] == "https://hooks.example.com/post" and body["webhook_method"] == "GET"
    assert body["webhook_filters"] == ["onMessageSent", "onUserUpdated"]
    assert body["notifications"]["new_message"] == {"enabled": True, "template": "hi"}
    assert body["notifications"]["added_to_channel"] == {"enabled": False}
    assert body["limits"] == {"channel_members": 500, "user_channels": 100}
    assert body["media"]["compatibility_message"] == "media!" and body["pre_webhook_retry_count"] == 2
    # new users get the new default role
    user = api.post(f"/v2/Services/{svc['sid']}/Users", {"Identity": "u"}).json()
    assert user["role_sid"] == admin["sid"]


@pytest.mark.parametrize("data, code", [
    ({"DefaultServiceRoleSid": "nope"}, 50102),
    ({"DefaultServiceRoleSid": "RL" + "1" * 32}, 50102),
    ({"ReachabilityEnabled": "maybe"}, 20001),
    ({"TypingIndicatorTimeout": "soon"}, 20001),
    ({"WebhookMethod": "PUT"}, 50055),
    ({"PostWebhookUrl": "ftp://x"}, 50078),
    ({"PreWebhookUrl": "javascript:x"}, 50077),
    ({"PostWebhookRetryCount": "4"}, 50065),
    ({"PreWebhookRetryCount": "-1"}, 50065),
    ({"WebhookFilters": "onNothing"}, 50054),
    ({"Limits.ChannelMembers": "5000"}, 20001),
])
def test_update_service_validation(api: Api, data: dict, code: int) -> None:
    svc = api.new_service()
    assert_error(api.post(f"/v2/Services/{svc['sid']}", data), 400, code)


def test_default_service_role_must_be_deployment(api: Api) -> None:
    svc = api.new_service()
    r = api.post(f"/v2/Services/{svc['sid']}", {"DefaultServiceRoleSid": svc["default_channel_role_sid"]})
    assert_error(r, 400, 50102)


def test_delete_service_removes_roles_and_users(api: Api) -> None:
    svc = api.new_service()
    api.post(f"/v2/Services/{svc['sid']}/Users", {"Identity": "u"})
    assert api.delete(f"/v2/Services/{svc['sid']}").status_code == 204
    assert_error(api.get(f"/v2/Services/{svc['sid']}"), 404, 20404)
    assert_error(api.get(f"/v2/Services/{svc['sid']}/Users/u"), 404, 20404)
    assert_error(api.get(f"/v2/Services/{svc['sid']}/Roles"), 404, 20404)
    assert_error(api.delete(f"/v2/Services/{svc['sid']}"), 404, 20404)


def test_services_list_only_the_accounts_own(api: Api) -> None:
    mine = api.new_service("mine")
    other = api.new_account()
    theirs = api.post("/v2/Services", {"FriendlyName": "theirs"}, auth=other).json()
    listed = [s["sid"] for s in api.get("/v2/Services").json()["services"]]
    assert mine["sid"] in listed and theirs["sid"] not in listed
    assert_error(api.get(f"/v2/Services/{theirs['sid']}"), 404, 20404)
    assert_error(api.post(f"/v2/Services/{theirs['sid']}", {"FriendlyName": "x"}), 404, 20404)
    assert_error(api.delete(f"/v2/Services/{theirs['sid']}"), 404, 20404)


def test_roles_crud(api: Api) -> None:
    svc = api.new_service()
    base = f"/v2/Services/{svc['sid']}/Roles"
    r = api.post(base, {"FriendlyName": "moderator", "Type": "deployment",
                        "Permission": ["editAnyUserInfo", "joinChannel"]})
    assert r.status_code == 201, r.text
    role = r.json()
    assert role["permissions"] == ["editAnyUserInfo", "joinChannel"] and role["type"] == "deployment"
    assert role["url"] == f"http://testserver{base}/{role['sid']}"
    assert api.get(f"{base}/{role['sid']}").json() == role
    r = api.post(f"{base}/{role['sid']}", {"Permission": ["editOwnUserInfo"]})
    assert r.status_code == 200 and r.json()["permissions"] == ["editOwnUserInfo"]
    assert api.delete(f"{base}/{role['sid']}").status_code == 204
    assert_error(api.get(f"{base}/{role['sid']}"), 404, 20404)


@pytest.mark.parametrize("data", [
    {"Type": "deployment", "Permission": "x"},
    {"FriendlyName": "r", "Permission": "x"},
    {"FriendlyName": "r", "Type": "deployment"},
])
def test_create_role_missing_parameter(api: Api, data: dict) -> None:
    svc = api.new_service()
    assert_error(api.post(f"/v2/Services/{svc['sid']}/Roles", data), 400, 20001)


def test_create_role_bad_type(api: Api) -> None:
    svc = api.new_service()
    r = api.post(f"/v2/Services/{svc['sid']}/Roles", {"FriendlyName": "r", "Type": "admin", "Permission": "x"})
    assert_error(r, 400, 20001)


def test_role_in_use_cannot_be_deleted(api: Api) -> None:
    svc = api.new_service()
    r = api.delete(f"/v2/Services/{svc['sid']}/Roles/{svc['default_service_role_sid']}")
    assert r.status_code == 409 and r.json()["code"] == 50100

