"""Users, exactly as SPEC §3, with every applicable error code of SPEC §2."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from twilio.base.exceptions import TwilioRestException

from blackbox.blackbox_helpers import (
    BB,
    ISO_Z,
    META_KEYS,
    PG_URL,
    USER_FIELDS,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
    sid_re,
)


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    return bb.new_service("users")


def users_url(svc: dict[str, Any]) -> str:
    return f"/v2/Services/{svc['sid']}/Users"


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- create ---------------------------------------------------------------------------------


def test_create_user_returns_201_with_exactly_the_spec_fields(bb: BB, svc: dict[str, Any]) -> None:
    identity = uid("alice")
    r = bb.http.post(users_url(svc), data={"Identity": identity})
    assert r.status_code == 201, r.text
    u = r.json()
    assert set(u) == USER_FIELDS
    assert sid_re("US").match(u["sid"])
    assert u["identity"] == identity
    assert u["account_sid"] == bb.account_sid
    assert u["service_sid"] == svc["sid"]
    assert u["role_sid"] == svc["default_service_role_sid"]
    assert u["attributes"] == "{}"
    assert u["friendly_name"] is None
    assert u["joined_channels_count"] == 0
    assert u["is_online"] is None and u["is_notifiable"] is None
    assert ISO_Z.match(u["date_created"]) and ISO_Z.match(u["date_updated"])
    assert u["url"] == f"{bb.base}/v2/Services/{svc['sid']}/Users/{u['sid']}"
    assert u["links"] == {
        "user_channels": f"{bb.base}/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels",
        "user_bindings": f"{bb.base}/v2/Services/{svc['sid']}/Users/{u['sid']}/Bindings",
    }


def test_create_user_with_all_optional_fields(bb: BB, svc: dict[str, Any]) -> None:
    admin_role = bb.roles(svc["sid"])["service admin"]["sid"]
    attrs = '{"team": "blue", "n": 1}'
    u = bb.new_user(svc["sid"], uid(), FriendlyName="Alice A.", Attributes=attrs, RoleSid=admin_role)
    assert u["friendly_name"] == "Alice A."
    assert json.loads(u["attributes"]) == {"team": "blue", "n": 1}
    assert isinstance(u["attributes"], str)
    assert u["role_sid"] == admin_role


def test_create_user_through_twilio_package(bb: BB, svc: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    identity = uid("pkg")
    u = users.create(identity=identity, friendly_name="Pkg", attributes='{"a": 1}')
    assert u.identity == identity and u.friendly_name == "Pkg"
    assert json.loads(u.attributes) == {"a": 1}
    assert u.date_created is not None and u.date_created.tzinfo is not None
    assert u.links["user_channels"].startswith(bb.base)


def test_duplicate_identity_is_409_50201(bb: BB, svc: dict[str, Any]) -> None:
    identity = uid("dup")
    bb.new_user(svc["sid"], identity)
    assert_error(bb.http.post(users_url(svc), data={"Identity": identity}), 409, 50201)


def test_duplicate_identity_through_twilio_package(bb: BB, svc: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    identity = uid("dup-pkg")
    users.create(identity=identity)
    with pytest.raises(TwilioRestException) as e:
        users.create(identity=identity)
    assert e.value.status == 409 and e.value.code == 50201


def test_same_identity_in_two_services_is_fine(bb: BB, svc: dict[str, Any]) -> None:
    other = bb.new_service("other")
    identity = uid("both")
    a = bb.new_user(svc["sid"], identity)
    b = bb.new_user(other["sid"], identity)
    assert a["sid"] != b["sid"]


def test_identity_is_case_sensitive_and_exact(bb: BB, svc: dict[str, Any]) -> None:
    base = uid("Case")
    bb.new_user(svc["sid"], base)
    bb.new_user(svc["sid"], base.lower())


def test_missing_identity_is_20001_with_twilio_message(bb: BB, svc: dict[str, Any]) -> None:
    body = assert_error(bb.http.post(users_url(svc), data={"FriendlyName": "x"}), 400, 20001)
    assert body["message"] == "Missing required parameter Identity in the post body"


def test_missing_identity_through_twilio_package(bb: BB, svc: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    with pytest.raises(TwilioRestException) as e:
        users.create(identity="")
    assert e.value.status == 400 and e.value.code == 20001


def test_empty_identity_is_20001(bb: BB, svc: dict[str, Any]) -> None:
    assert_error(bb.http.post(users_url(svc), data={"Identity": ""}), 400, 20001)


def test_identity_of_256_chars_is_accepted(bb: BB, svc: dict[str, Any]) -> None:
    identity = ("x" * 243) + uuid.uuid4().hex[:13]
    assert len(identity) == 256
    assert bb.new_user(svc["sid"], identity)["identity"] == identity


def test_identity_of_256_non_ascii_chars_is_accepted(bb: BB, svc: dict[str, Any]) -> None:
    # SPEC §2 counts characters ("> 256 chars"), not bytes.
    identity = "ü" * 244 + uuid.uuid4().hex[:12]
    assert len(identity) == 256 and len(identity.encode()) > 256
    assert bb.new_user(svc["sid"], identity)["identity"] == identity


def test_identity_longer_than_256_chars_is_50207(bb: BB, svc: dict[str, Any]) -> None:
    assert_error(bb.http.post(users_url(svc), data={"Identity": "y" * 257}), 400, 50207)
    assert_error(bb.http.post(users_url(svc), data={"Identity": "y" * 5000}), 400, 50207)


@pytest.mark.parametrize("identity", ["US" + "0123456789abcdef" * 2, "US" + uuid.uuid4().hex])
def test_identity_that_looks_like_a_user_sid_is_50206(bb: BB, svc: dict[str, Any], identity: str) -> None:
    assert_error(bb.http.post(users_url(svc), data={"Identity": identity}), 400, 50206)


def test_identity_that_looks_like_a_user_sid_uppercase_hex_is_50206(bb: BB, svc: dict[str, Any]) -> None:
    # The reference's User SID pattern is ^US[0-9a-fA-F]{32}$.
    assert_error(bb.http.post(users_url(svc), data={"Identity": "US" + uuid.uuid4().hex.upper()}), 400, 50206)


@pytest.mark.parametrize("identity", ["US" + "a" * 31, "US" + "a" * 33, "us" + "a" * 32, "US" + "g" * 32,
                                      "XX" + "a" * 32])
def test_identity_close_to_but_not_a_user_sid_is_accepted(bb: BB, svc: dict[str, Any], identity: str) -> None:
    other = bb.new_service("near-sid")
    assert bb.new_user(other["sid"], identity)["identity"] == identity


@pytest.mark.parametrize("attributes", ["{", "not json", "{'single': 1}", '{"a": }', "{}garbage"])
def test_attributes_not_json_is_50304(bb: BB, svc: dict[str, Any], attributes: str) -> None:
    assert_error(bb.http.post(users_url(svc), data={"Identity": uid(), "Attributes": attributes}), 400, 50304)


def test_attributes_of_16_kib_is_accepted_and_longer_is_50303(bb: BB, svc: dict[str, Any]) -> None:
    def attrs(total: int) -> str:
        s = json.dumps({"k": "v" * (total - 9)})
        return s

    exact = attrs(16 * 1024)
    assert len(exact) == 16 * 1024
    u = bb.new_user(svc["sid"], uid(), Attributes=exact)
    assert json.loads(u["attributes"]) == json.loads(exact)
    over = attrs(16 * 1024 + 1)
    assert_error(bb.http.post(users_url(svc), data={"Identity": uid(), "Attributes": over}), 400, 50303)


def test_attributes_limit_counts_utf8_bytes(bb: BB, svc: dict[str, Any]) -> None:
    # 16 KiB is a size in bytes: 5,460 euro signs are 16,389 bytes of UTF-8 but only 5,469 characters.
    under = json.dumps({"k": "\u20ac" * 5450}, ensure_ascii=False)
    assert len(under.encode()) <= 16 * 1024
    assert json.loads(bb.new_user(svc["sid"], uid(), Attributes=under)["attributes"]) == json.loads(under)
    over = json.dumps({"k": "\u20ac" * 5460}, ensure_ascii=False)
    assert len(over.encode()) > 16 * 1024 > len(over)
    assert_error(bb.http.post(users_url(svc), data={"Identity": uid(), "Attributes": over}), 400, 50303)


def test_friendly_name_of_256_is_accepted_and_257_is_50003(bb: BB, svc: dict[str, Any]) -> None:
    assert bb.new_user(svc["sid"], uid(), FriendlyName="f" * 256)["friendly_name"] == "f" * 256
    assert_error(bb.http.post(users_url(svc), data={"Identity": uid(), "FriendlyName": "f" * 257}), 400, 50003)


@pytest.mark.parametrize("kind", ["malformed", "garbage", "unknown-RL", "channel-role", "other-service-role"])
def test_bad_role_sid_on_create_is_50102(bb: BB, svc: dict[str, Any], kind: str) -> None:
    role = {
        "malformed": "RL123",
        "garbage": "service admin",
        "unknown-RL": "RL" + uuid.uuid4().hex,
    }.get(kind)
    if kind == "channel-role":
        role = bb.roles(svc["sid"])["channel user"]["sid"]
    elif kind == "other-service-role":
        role = bb.roles(bb.new_service("foreign")["sid"])["service admin"]["sid"]
    identity = uid("role")
    assert_error(bb.http.post(users_url(svc), data={"Identity": identity, "RoleSid": role}), 400, 50102)
    assert_error(bb.http.get(f"{users_url(svc)}/{identity}"), 404, 20404)


def test_plus_in_a_form_body_is_a_space(bb: BB) -> None:
    svc = bb.new_service("plus")
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Users", content=b"Identity=a+b%2Bc",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201, r.text
    assert r.json()["identity"] == "a b+c"


def test_empty_role_sid_on_update_is_50102(bb: BB, svc: dict[str, Any]) -> None:
    made = bb.new_user(svc["sid"], uid("empty-role-upd"))
    assert_error(bb.http.post(f"{users_url(svc)}/{made['sid']}", data={"RoleSid": ""}), 400, 50102)


def test_empty_role_sid_on_create_is_50102(bb: BB, svc: dict[str, Any]) -> None:
    # SPEC §2: RoleSid "not a deployment role of this service, malformed included" -> 50102; the
    # same empty value is already 50102 on user update and for DefaultServiceRoleSid.
    identity = uid("empty-role")
    assert_error(bb.http.post(users_url(svc), data={"Identity": identity, "RoleSid": ""}), 400, 50102)
    assert_error(bb.http.get(f"{users_url(svc)}/{identity}"), 404, 20404)


def test_custom_deployment_role_is_accepted_as_role_sid(bb: BB, svc: dict[str, Any]) -> None:
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles",
                     data={"FriendlyName": "custom", "Type": "deployment", "Permission": "joinChannel"})
    assert r.status_code == 201, r.text
    assert bb.new_user(svc["sid"], uid(), RoleSid=r.json()["sid"])["role_sid"] == r.json()["sid"]


# --- fetch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("identity", ["alice@example.com", "a b", "ünï"])
def test_fetch_by_sid_and_by_identity_through_twilio_package(bb: BB, identity: str) -> None:
    svc = bb.new_service("fetch")
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    made = users.create(identity=identity)
    assert made.identity == identity
    assert users(made.sid).fetch().identity == identity
    by_identity = users(identity).fetch()
    assert by_identity.sid == made.sid and by_identity.identity == identity


@pytest.mark.parametrize("identity", ["alice@example.com", "a b", "ünï", "x+y=z&w", "semi;colon", "100%",
                                      "q?u#e", "dots..", "emoji-\U0001F600", "tab\there"])
def test_fetch_by_url_encoded_identity_raw(bb: BB, identity: str) -> None:
    svc = bb.new_service("fetch-raw")
    made = bb.new_user(svc["sid"], identity)
    r = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{quote(identity, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json()["sid"] == made["sid"] and r.json()["identity"] == identity


def test_identity_with_slash_is_addressable_with_percent_2f(bb: BB, svc: dict[str, Any]) -> None:
    identity = f"a/b-{uuid.uuid4().hex[:6]}"
    encoded = identity.replace("/", "%2F")
    made = bb.new_user(svc["sid"], identity)
    r = bb.http.get(f"{users_url(svc)}/{encoded}")
    assert r.status_code == 200, r.text
    assert r.json()["sid"] == made["sid"] and r.json()["identity"] == identity
    lower = bb.http.get(f"{users_url(svc)}/{encoded.replace('%2F', '%2f')}")
    assert lower.status_code == 200 and lower.json()["sid"] == made["sid"]

    r = bb.http.post(f"{users_url(svc)}/{encoded}", data={"FriendlyName": "slashy"})
    assert r.status_code == 200, r.text
    assert r.json()["friendly_name"] == "slashy" and r.json()["identity"] == identity

    for sub in ("Channels", "Bindings"):
        r = bb.http.get(f"{users_url(svc)}/{encoded}/{sub}")
        assert r.status_code == 200, (sub, r.text)

    assert bb.http.delete(f"{users_url(svc)}/{encoded}").status_code == 204
    assert_error(bb.http.get(f"{users_url(svc)}/{made['sid']}"), 404, 20404)


@pytest.mark.parametrize("identity, encoded", [("..", "%2E%2E"), (".", "%2E"), ("...", "..."), ("a.", "a.")])
def test_dot_identities_are_addressable(bb: BB, identity: str, encoded: str) -> None:
    svc = bb.new_service("dots")
    made = bb.new_user(svc["sid"], identity)
    r = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{encoded}")
    assert r.status_code == 200, r.text
    assert r.json()["sid"] == made["sid"]


@pytest.mark.parametrize("stored, asked", [("abc", "a_c"), ("abc", "a%25"), ("abc", "%25"), ("Bob", "bob"),
                                           ("bob", "BOB"), ("ab", "ab%20"), ("x", "X"),
                                           ("a b", "a+b")])
def test_lookup_by_identity_is_exact_not_pattern_or_case_insensitive(bb: BB, stored: str, asked: str) -> None:
    svc = bb.new_service("exact")
    bb.new_user(svc["sid"], stored)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{asked}"), 404, 20404)


def test_literal_a_slash_b_path_is_not_identity_a_slash_b(bb: BB, svc: dict[str, Any]) -> None:
    identity = f"p/q{uuid.uuid4().hex[:6]}"
    bb.new_user(svc["sid"], identity)
    r = bb.http.get(f"{users_url(svc)}/{identity}")
    assert r.status_code == 404, r.text


def test_fetch_unknown_user_is_404_20404(bb: BB, svc: dict[str, Any]) -> None:
    assert_error(bb.http.get(f"{users_url(svc)}/nobody-{uuid.uuid4().hex}"), 404, 20404)
    assert_error(bb.http.get(f"{users_url(svc)}/US{uuid.uuid4().hex}"), 404, 20404)
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    with pytest.raises(TwilioRestException) as e:
        users("nobody-at-all").fetch()
    assert e.value.status == 404 and e.value.code == 20404


def test_user_of_another_service_is_404(bb: BB, svc: dict[str, Any]) -> None:
    other = bb.new_service("elsewhere")
    u = bb.new_user(other["sid"], uid("elsewhere"))
    assert_error(bb.http.get(f"{users_url(svc)}/{u['sid']}"), 404, 20404)
    assert_error(bb.http.get(f"{users_url(svc)}/{u['identity']}"), 404, 20404)
    assert_error(bb.http.post(f"{users_url(svc)}/{u['sid']}", data={"FriendlyName": "x"}), 404, 20404)
    assert_error(bb.http.delete(f"{users_url(svc)}/{u['sid']}"), 404, 20404)


def test_fetch_with_reachability_disabled_has_null_presence(bb: BB, svc: dict[str, Any]) -> None:
    u = bb.new_user(svc["sid"], uid())
    body = bb.http.get(f"{users_url(svc)}/{u['sid']}").json()
    assert body["is_online"] is None and body["is_notifiable"] is None


def test_fetch_with_reachability_enabled_never_online_is_null(bb: BB) -> None:
    svc = bb.new_service("reach")
    r = bb.http.post(f"/v2/Services/{svc['sid']}", data={"ReachabilityEnabled": "true"})
    assert r.status_code == 200 and r.json()["reachability_enabled"] is True
    u = bb.new_user(svc["sid"], uid())
    body = bb.http.get(f"{users_url(svc)}/{u['sid']}").json()
    assert body["is_online"] is None and body["is_notifiable"] is None
    listed = bb.http.get(users_url(svc)).json()["users"]
    assert all(x["is_online"] is None and x["is_notifiable"] is None for x in listed)


# --- update ---------------------------------------------------------------------------------


def test_update_user_through_twilio_package(bb: BB, svc: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    identity = uid("upd")
    made = users.create(identity=identity)
    admin = bb.roles(svc["sid"])["service admin"]["sid"]
    updated = users(made.sid).update(friendly_name="New Name", attributes='{"x": [1, 2]}', role_sid=admin)
    assert updated.identity == identity
    assert updated.friendly_name == "New Name"
    assert json.loads(updated.attributes) == {"x": [1, 2]}
    assert updated.role_sid == admin
    fetched = users(identity).fetch()
    assert fetched.friendly_name == "New Name" and fetched.role_sid == admin


def test_twilio_package_webhook_header_is_accepted(bb: BB, svc: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    identity = uid("hook")
    made = users.create(identity=identity, x_twilio_webhook_enabled="true")
    updated = users(made.sid).update(friendly_name="hooked", x_twilio_webhook_enabled="false")
    assert updated.friendly_name == "hooked" and updated.identity == identity


def test_update_by_identity_raw_returns_200_and_identity_never_changes(bb: BB, svc: dict[str, Any]) -> None:
    identity = uid("keep")
    made = bb.new_user(svc["sid"], identity)
    r = bb.http.post(f"{users_url(svc)}/{identity}", data={"FriendlyName": "kept", "Identity": "changed"})
    assert r.status_code == 200, r.text
    assert r.json()["identity"] == identity and r.json()["sid"] == made["sid"]
    assert bb.http.get(f"{users_url(svc)}/{identity}").status_code == 200
    assert_error(bb.http.get(f"{users_url(svc)}/changed"), 404, 20404)


def test_empty_update_is_a_noop_200_and_real_update_bumps_date_updated(bb: BB, svc: dict[str, Any]) -> None:
    made = bb.new_user(svc["sid"], uid("noop"), FriendlyName="Same", Attributes='{"k": 1}')
    time.sleep(1.05)  # whole-second dates: a change of date_updated would be visible
    r = bb.http.post(f"{users_url(svc)}/{made['sid']}", data={})
    assert r.status_code == 200, r.text
    assert r.json() == made
    assert bb.http.get(f"{users_url(svc)}/{made['sid']}").json() == made
    r = bb.http.post(f"{users_url(svc)}/{made['sid']}", data={"FriendlyName": "Changed"})
    assert r.status_code == 200
    assert r.json()["date_created"] == made["date_created"]
    assert r.json()["date_updated"] > made["date_updated"]
    assert ISO_Z.match(r.json()["date_updated"])


def test_update_validations(bb: BB, svc: dict[str, Any]) -> None:
    made = bb.new_user(svc["sid"], uid("val"))
    url = f"{users_url(svc)}/{made['sid']}"
    assert_error(bb.http.post(url, data={"Attributes": "{nope"}), 400, 50304)
    assert_error(bb.http.post(url, data={"Attributes": json.dumps({"k": "v" * 17000})}), 400, 50303)
    assert_error(bb.http.post(url, data={"FriendlyName": "n" * 257}), 400, 50003)
    assert_error(bb.http.post(url, data={"RoleSid": "RL123"}), 400, 50102)
    assert_error(bb.http.post(url, data={"RoleSid": bb.roles(svc["sid"])["channel admin"]["sid"]}), 400, 50102)
    assert_error(bb.http.post(url, data={"RoleSid": "RL" + uuid.uuid4().hex}), 400, 50102)
    # Nothing changed.
    assert bb.http.get(url).json() == made


def test_update_unknown_user_is_404(bb: BB, svc: dict[str, Any]) -> None:
    assert_error(bb.http.post(f"{users_url(svc)}/ghost-{uuid.uuid4().hex}", data={"FriendlyName": "x"}), 404, 20404)


# --- delete ---------------------------------------------------------------------------------


def test_delete_then_404_and_identity_reusable(bb: BB, svc: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    identity = uid("del")
    made = users.create(identity=identity)
    assert users(made.sid).delete() is True
    assert_error(bb.http.get(f"{users_url(svc)}/{made.sid}"), 404, 20404)
    assert_error(bb.http.get(f"{users_url(svc)}/{identity}"), 404, 20404)
    with pytest.raises(TwilioRestException) as e:
        users(identity).fetch()
    assert e.value.status == 404 and e.value.code == 20404
    again = users.create(identity=identity)
    assert again.sid != made.sid
    assert users(identity).fetch().sid == again.sid


def test_delete_by_identity_raw_is_204_and_twice_is_404(bb: BB, svc: dict[str, Any]) -> None:
    identity = uid("del-raw")
    bb.new_user(svc["sid"], identity)
    r = bb.http.delete(f"{users_url(svc)}/{identity}")
    assert r.status_code == 204 and r.content == b""
    assert_error(bb.http.delete(f"{users_url(svc)}/{identity}"), 404, 20404)
    listed = bb.http.get(users_url(svc), params={"PageSize": 100}).json()["users"]
    assert identity not in [u["identity"] for u in listed]


@pytest.mark.skipif(bool(PG_URL), reason="inspects the SQLite database files")
def test_deleted_user_pii_leaves_no_trace_in_sqlite_files(bb: BB) -> None:
    svc = bb.new_service("pii")
    marker = uuid.uuid4().hex
    identity = f"pii-identity-{marker}"
    fname = f"pii-name-{marker}"
    attrs = json.dumps({"secret": f"pii-attr-{marker}"})
    bb.new_user(svc["sid"], identity, FriendlyName=fname, Attributes=attrs)
    bb.http.post(f"{users_url(svc)}/{identity}", data={"FriendlyName": fname + "-v2"})
    assert bb.http.delete(f"{users_url(svc)}/{identity}").status_code == 204
    db = Path(bb.server.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///"))
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert files
    for path in files:
        data = path.read_bytes()
        assert marker.encode() not in data, f"PII of a deleted user still in {path.name}"


@pytest.mark.skipif(bool(PG_URL), reason="inspects the SQLite database files")
def test_users_removed_with_their_service_leave_no_trace_in_sqlite_files(bb: BB) -> None:
    svc = bb.new_service("pii-service")
    marker = uuid.uuid4().hex
    bb.new_user(svc["sid"], f"svc-pii-{marker}", FriendlyName=f"fn-{marker}", Attributes=json.dumps({"m": marker}))
    bb.token(svc["sid"], f"tok-pii-{marker}")
    assert bb.http.delete(f"/v2/Services/{svc['sid']}").status_code == 204
    _assert_marker_gone(bb, marker)


@pytest.mark.skipif(bool(PG_URL), reason="inspects the SQLite database files")
def test_token_provisioned_user_leaves_no_trace_after_delete(bb: BB) -> None:
    svc = bb.new_service("pii-token")
    marker = uuid.uuid4().hex
    identity = f"tok-only-{marker}"
    tok = bb.token(svc["sid"], identity)
    c = bb.client(headers={"X-Twilio-Token": tok["token"]})
    assert c.post(f"{users_url(svc)}/{identity}", data={"FriendlyName": f"self-{marker}"}).status_code == 200
    assert bb.http.delete(f"{users_url(svc)}/{identity}").status_code == 204
    _assert_marker_gone(bb, marker)


@pytest.mark.skipif(bool(PG_URL), reason="inspects the SQLite database files")
def test_auth_token_is_not_stored_in_clear(bb: BB) -> None:
    bb.new_service("touch")  # make sure credentials were checked and anything cached was written
    token = bb.auth[1].encode()
    db = Path(bb.server.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///"))
    for path in db.parent.iterdir():
        if path.name.startswith(db.name):
            assert token not in path.read_bytes(), path.name


def _assert_marker_gone(bb: BB, marker: str) -> None:
    db = Path(bb.server.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///"))
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert files
    for path in files:
        assert marker.encode() not in path.read_bytes(), f"PII of a deleted user still in {path.name}"


# --- lists, sub-resources -------------------------------------------------------------------


def test_list_users_fields_and_meta(bb: BB) -> None:
    svc = bb.new_service("list")
    made = [bb.new_user(svc["sid"], uid("l")) for _ in range(3)]
    r = bb.http.get(users_url(svc))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"users", "meta"}
    assert [u["sid"] for u in body["users"]] == [m["sid"] for m in made]
    for u in body["users"]:
        assert set(u) == USER_FIELDS
        assert u["is_online"] is None and u["is_notifiable"] is None
        assert u["attributes"] == "{}" and u["friendly_name"] is None
        assert u["url"].startswith(bb.base + "/")
    meta = body["meta"]
    assert set(meta) == META_KEYS
    assert meta["key"] == "users"
    assert meta["page"] == 0 and meta["page_size"] == 50
    assert meta["next_page_url"] is None and meta["previous_page_url"] is None
    assert meta["url"].startswith(f"{bb.base}/v2/Services/{svc['sid']}/Users")
    assert meta["first_page_url"].startswith(f"{bb.base}/v2/Services/{svc['sid']}/Users")


def test_list_users_of_empty_service(bb: BB) -> None:
    svc = bb.new_service("empty")
    body = bb.http.get(users_url(svc)).json()
    assert body["users"] == [] and body["meta"]["next_page_url"] is None
    assert bb.twilio().chat.v2.services(svc["sid"]).users.list() == []


@pytest.mark.parametrize("sub, key", [("Channels", "channels"), ("Bindings", "bindings")])
def test_user_channels_and_bindings_are_empty_pages(bb: BB, svc: dict[str, Any], sub: str, key: str) -> None:
    made = bb.new_user(svc["sid"], uid("sub"))
    for ref in (made["sid"], made["identity"]):
        r = bb.http.get(f"{users_url(svc)}/{ref}/{sub}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body["meta"]) >= META_KEYS
        assert body["meta"]["key"] == key
        assert body[key] == []
        assert body["meta"]["next_page_url"] is None
        assert body["meta"]["url"].startswith(bb.base + "/")
    r = bb.http.get(f"{users_url(svc)}/{made['sid']}/{sub}", params={"PageSize": 100})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["page_size"] <= 50
    assert_error(bb.http.get(f"{users_url(svc)}/nobody-{uuid.uuid4().hex}/{sub}"), 404, 20404)


def test_user_channels_and_bindings_through_twilio_package(bb: BB, svc: dict[str, Any]) -> None:
    made = bb.new_user(svc["sid"], uid("subpkg"))
    user = bb.twilio().chat.v2.services(svc["sid"]).users(made["sid"])
    assert user.user_channels.list() == []
    assert user.user_bindings.list() == []
