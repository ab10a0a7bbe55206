"""Services and Roles (SPEC §3), through the official twilio package and raw HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from blackbox.blackbox_helpers import (
    BB,
    ISO_Z,
    META_KEYS,
    ROLE_FIELDS,
    SERVICE_FIELDS,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
    form,
    sid_re,
)

SERVICE_USER_PERMISSIONS = {"createChannel", "joinChannel", "editOwnUserInfo"}
SERVICE_ADMIN_PERMISSIONS = {"addMember", "createChannel", "deleteAnyMessage", "destroyChannel", "editAnyMessage",
                             "editAnyMessageAttributes", "editAnyUserInfo", "editChannelAttributes",
                             "editChannelName", "inviteMember", "joinChannel", "removeMember"}


def _absolute(bb: BB, url: Any) -> None:
    assert isinstance(url, str) and url.startswith(bb.base + "/"), url


# --- Services -------------------------------------------------------------------------------


def test_create_service_through_twilio_package_returns_every_schema_field(bb: BB) -> None:
    client = bb.twilio()
    svc = client.chat.v2.services.create(friendly_name="my app")
    assert sid_re("IS").match(svc.sid)
    assert svc.friendly_name == "my app"
    assert svc.account_sid == bb.account_sid

    r = bb.http.get(f"/v2/Services/{svc.sid}")
    assert r.status_code == 200
    body = r.json()
    missing = SERVICE_FIELDS - set(body)
    assert not missing, f"chat.v2.service fields missing: {sorted(missing)}"
    assert ISO_Z.match(body["date_created"]) and ISO_Z.match(body["date_updated"])
    assert body["url"] == f"{bb.base}/v2/Services/{svc.sid}"
    assert isinstance(body["links"], dict) and body["links"]
    for link in body["links"].values():
        _absolute(bb, link)
    assert body["links"]["users"] == f"{bb.base}/v2/Services/{svc.sid}/Users"
    assert body["links"]["roles"] == f"{bb.base}/v2/Services/{svc.sid}/Roles"


def test_create_service_raw_answers_201_with_json(bb: BB) -> None:
    r = bb.http.post("/v2/Services", data={"FriendlyName": "raw"})
    assert r.status_code == 201
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["friendly_name"] == "raw"


def test_create_service_without_friendly_name_is_20001(bb: BB) -> None:
    body = assert_error(bb.http.post("/v2/Services", data={}), 400, 20001)
    assert "FriendlyName" in body["message"]


def test_friendly_name_longer_than_256_is_50003_for_services_and_roles(bb: BB) -> None:
    assert_error(bb.http.post("/v2/Services", data={"FriendlyName": "s" * 257}), 400, 50003)
    svc = bb.new_service("s" * 256)
    assert svc["friendly_name"] == "s" * 256
    assert_error(bb.http.post(f"/v2/Services/{svc['sid']}", data={"FriendlyName": "s" * 257}), 400, 50003)
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles",
                     data={"FriendlyName": "r" * 257, "Type": "deployment", "Permission": "joinChannel"})
    assert_error(r, 400, 50003)


def test_service_defaults_follow_twilio_reference(bb: BB) -> None:
    body = bb.new_service("defaults")
    # Defaults documented in the chat.v2.service schema of the reference.
    assert body["read_status_enabled"] is True
    assert body["reachability_enabled"] is False
    assert body["typing_indicator_timeout"] == 5
    assert body["webhook_method"] == "POST"
    assert body["pre_webhook_retry_count"] == 0
    assert body["post_webhook_retry_count"] == 0
    assert body["pre_webhook_url"] is None and body["post_webhook_url"] is None


def test_service_limits_defaults_follow_twilio_reference(bb: BB) -> None:
    # Reference, chat.v2.service.limits: "`channel_members` ... with a default of 250.
    # `user_channels` ... with a default value of 100."
    body = bb.new_service("limits")
    assert body["limits"] == {"channel_members": 250, "user_channels": 100}


def test_creating_a_service_creates_the_four_default_roles(bb: BB) -> None:
    svc = bb.new_service("roles")
    roles = bb.roles(svc["sid"])
    assert set(roles) == {"service admin", "service user", "channel admin", "channel user"}
    assert roles["service admin"]["type"] == "deployment"
    assert roles["service user"]["type"] == "deployment"
    assert roles["channel admin"]["type"] == "channel"
    assert roles["channel user"]["type"] == "channel"
    assert svc["default_service_role_sid"] == roles["service user"]["sid"]
    assert svc["default_channel_role_sid"] == roles["channel user"]["sid"]
    assert svc["default_channel_creator_role_sid"] == roles["channel admin"]["sid"]
    assert set(roles["service user"]["permissions"]) == SERVICE_USER_PERMISSIONS
    assert set(roles["service admin"]["permissions"]) >= SERVICE_ADMIN_PERMISSIONS
    assert {"sendMessage", "leaveChannel"} <= set(roles["channel user"]["permissions"])
    assert {"addMember", "removeMember", "inviteMember", "sendMessage"} <= set(roles["channel admin"]["permissions"])
    for role in roles.values():
        assert ROLE_FIELDS <= set(role), ROLE_FIELDS - set(role)
        assert sid_re("RL").match(role["sid"])
        assert role["service_sid"] == svc["sid"] and role["account_sid"] == bb.account_sid
        assert role["url"] == f"{bb.base}/v2/Services/{svc['sid']}/Roles/{role['sid']}"
        assert ISO_Z.match(role["date_created"]) and ISO_Z.match(role["date_updated"])


def test_fetch_and_list_services(bb: BB) -> None:
    client = bb.twilio()
    a = client.chat.v2.services.create(friendly_name="list-a")
    b = client.chat.v2.services.create(friendly_name="list-b")
    fetched = client.chat.v2.services(a.sid).fetch()
    assert fetched.sid == a.sid and fetched.friendly_name == "list-a"
    sids = [s.sid for s in client.chat.v2.services.list()]
    assert a.sid in sids and b.sid in sids
    assert sids.index(a.sid) < sids.index(b.sid), "creation order"
    assert len(sids) == len(set(sids))

    r = bb.http.get("/v2/Services", params={"PageSize": 2})
    assert r.status_code == 200
    body = r.json()
    assert set(body["meta"]) >= META_KEYS
    assert body["meta"]["key"] == "services"
    assert body["meta"]["page_size"] == 2
    assert len(body["services"]) == 2
    assert body["meta"]["next_page_url"].startswith(bb.base + "/")


def test_update_service_fields(bb: BB) -> None:
    client = bb.twilio()
    svc = client.chat.v2.services.create(friendly_name="before")
    roles = bb.roles(svc.sid)
    updated = client.chat.v2.services(svc.sid).update(
        friendly_name="after", reachability_enabled=True,
        default_service_role_sid=roles["service admin"]["sid"])
    assert updated.friendly_name == "after"
    assert updated.reachability_enabled is True
    assert updated.default_service_role_sid == roles["service admin"]["sid"]
    again = client.chat.v2.services(svc.sid).fetch()
    assert again.friendly_name == "after" and again.reachability_enabled is True
    assert again.default_service_role_sid == roles["service admin"]["sid"]

    # The new default role is used for users created afterwards.
    user = client.chat.v2.services(svc.sid).users.create(identity="after-default-change")
    assert user.role_sid == roles["service admin"]["sid"]


def test_update_service_webhooks_and_channel_roles(bb: BB) -> None:
    svc = bb.new_service("hooks")
    roles = bb.roles(svc["sid"])
    r = bb.http.post(f"/v2/Services/{svc['sid']}", **form([
        ("PostWebhookUrl", "https://hooks.example.com/post"),
        ("WebhookFilters", "onMessageSent"),
        ("WebhookFilters", "onChannelAdded"),
        ("DefaultChannelRoleSid", roles["channel admin"]["sid"]),
        ("DefaultChannelCreatorRoleSid", roles["channel user"]["sid"]),
    ]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["post_webhook_url"] == "https://hooks.example.com/post"
    assert body["webhook_filters"] == ["onMessageSent", "onChannelAdded"]
    assert body["default_channel_role_sid"] == roles["channel admin"]["sid"]
    assert body["default_channel_creator_role_sid"] == roles["channel user"]["sid"]
    assert bb.http.get(f"/v2/Services/{svc['sid']}").json()["webhook_filters"] == ["onMessageSent", "onChannelAdded"]


@pytest.mark.parametrize("bad", ["RLnot-a-sid", "nonsense", "RL" + "0" * 32, "", "channel-role", "other-service"])
def test_update_default_service_role_with_bad_value_is_50102(bb: BB, bad: str) -> None:
    svc = bb.new_service("bad-role")
    if bad == "channel-role":
        bad = bb.roles(svc["sid"])["channel user"]["sid"]
    elif bad == "other-service":
        bad = bb.roles(bb.new_service("other")["sid"])["service user"]["sid"]
    assert_error(bb.http.post(f"/v2/Services/{svc['sid']}", data={"DefaultServiceRoleSid": bad}), 400, 50102)
    current = bb.http.get(f"/v2/Services/{svc['sid']}").json()
    assert current["default_service_role_sid"] == svc["default_service_role_sid"]


def test_update_default_service_role_bad_value_through_twilio_package(bb: BB) -> None:
    client = bb.twilio()
    svc = client.chat.v2.services.create(friendly_name="pkg-bad-role")
    with pytest.raises(TwilioRestException) as e:
        client.chat.v2.services(svc.sid).update(default_service_role_sid="RL" + "f" * 32)
    assert e.value.status == 400 and e.value.code == 50102


def test_update_service_with_non_boolean_is_20001(bb: BB) -> None:
    svc = bb.new_service("bool")
    assert_error(bb.http.post(f"/v2/Services/{svc['sid']}", data={"ReachabilityEnabled": "maybe"}), 400, 20001)


def test_delete_service_then_404_and_its_roles_and_users_gone(bb: BB) -> None:
    client = bb.twilio()
    svc = client.chat.v2.services.create(friendly_name="doomed")
    user = client.chat.v2.services(svc.sid).users.create(identity="doomed-user")
    role_sid = bb.roles(svc.sid)["service user"]["sid"]

    r = bb.http.delete(f"/v2/Services/{svc.sid}")
    assert r.status_code == 204
    assert r.content == b""
    assert_error(bb.http.get(f"/v2/Services/{svc.sid}"), 404, 20404)
    assert_error(bb.http.delete(f"/v2/Services/{svc.sid}"), 404, 20404)
    assert_error(bb.http.get(f"/v2/Services/{svc.sid}/Users/{user.sid}"), 404, 20404)
    assert_error(bb.http.get(f"/v2/Services/{svc.sid}/Users"), 404, 20404)
    assert_error(bb.http.get(f"/v2/Services/{svc.sid}/Roles/{role_sid}"), 404, 20404)
    assert svc.sid not in [s.sid for s in client.chat.v2.services.list()]
    with pytest.raises(TwilioRestException) as e:
        client.chat.v2.services(svc.sid).fetch()
    assert e.value.status == 404 and e.value.code == 20404


def test_delete_service_through_twilio_package(bb: BB) -> None:
    client = bb.twilio()
    svc = client.chat.v2.services.create(friendly_name="doomed-pkg")
    assert client.chat.v2.services(svc.sid).delete() is True


def test_fetch_unknown_service_is_404(bb: BB) -> None:
    assert_error(bb.http.get("/v2/Services/IS" + "0" * 32), 404, 20404)
    assert_error(bb.http.get("/v2/Services/not-a-sid"), 404, 20404)


# --- Roles ----------------------------------------------------------------------------------


def test_role_lifecycle_through_twilio_package(bb: BB) -> None:
    client = bb.twilio()
    svc = client.chat.v2.services.create(friendly_name="roles")
    roles_api = client.chat.v2.services(svc.sid).roles

    listed = roles_api.list()
    assert {r.friendly_name for r in listed} == {"service admin", "service user", "channel admin", "channel user"}

    role = roles_api.create(friendly_name="moderator", type="deployment",
                            permission=["createChannel", "joinChannel", "editAnyUserInfo"])
    assert sid_re("RL").match(role.sid)
    assert role.type == "deployment"
    assert set(role.permissions) == {"createChannel", "joinChannel", "editAnyUserInfo"}
    assert role.friendly_name == "moderator"

    fetched = roles_api(role.sid).fetch()
    assert fetched.sid == role.sid and set(fetched.permissions) == set(role.permissions)
    assert role.sid in [r.sid for r in roles_api.list()]

    updated = roles_api(role.sid).update(permission=["joinChannel"])
    assert updated.permissions == ["joinChannel"], "Permission replaces the set"
    assert roles_api(role.sid).fetch().permissions == ["joinChannel"]

    assert roles_api(role.sid).delete() is True
    with pytest.raises(TwilioRestException) as e:
        roles_api(role.sid).fetch()
    assert e.value.status == 404 and e.value.code == 20404
    assert role.sid not in [r.sid for r in roles_api.list()]


def test_create_channel_role_raw_with_repeated_permission(bb: BB) -> None:
    svc = bb.new_service("raw-roles")
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles", **form([
        ("FriendlyName", "poster"), ("Type", "channel"), ("Permission", "sendMessage"),
        ("Permission", "leaveChannel")]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["type"] == "channel"
    assert set(body["permissions"]) == {"sendMessage", "leaveChannel"}
    assert ROLE_FIELDS <= set(body)
    assert body["url"] == f"{bb.base}/v2/Services/{svc['sid']}/Roles/{body['sid']}"


def test_create_role_with_bad_type_or_missing_fields_is_400(bb: BB) -> None:
    svc = bb.new_service("bad-roles")
    url = f"/v2/Services/{svc['sid']}/Roles"
    assert_error(bb.http.post(url, data={"Type": "deployment", "Permission": "joinChannel"}), 400, 20001)
    assert_error(bb.http.post(url, data={"FriendlyName": "x", "Permission": "joinChannel"}), 400, 20001)
    r = bb.http.post(url, data={"FriendlyName": "x", "Type": "galaxy", "Permission": "joinChannel"})
    assert_error(r, 400)


def test_role_of_another_service_is_404_through_this_service(bb: BB) -> None:
    a = bb.new_service("a")
    b = bb.new_service("b")
    role_b = bb.roles(b["sid"])["service user"]["sid"]
    assert_error(bb.http.get(f"/v2/Services/{a['sid']}/Roles/{role_b}"), 404, 20404)
    assert_error(bb.http.get(f"/v2/Services/{a['sid']}/Roles/RL{'0' * 32}"), 404, 20404)


def test_roles_list_meta(bb: BB) -> None:
    svc = bb.new_service("roles-meta")
    r = bb.http.get(f"/v2/Services/{svc['sid']}/Roles")
    meta = r.json()["meta"]
    assert set(meta) >= META_KEYS
    assert meta["key"] == "roles"
    assert meta["next_page_url"] is None
    assert meta["url"].startswith(bb.base + "/") and meta["first_page_url"].startswith(bb.base + "/")
