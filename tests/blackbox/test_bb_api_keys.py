"""API keys (SPEC §3, Twilio 2010 API) through the twilio package; keys as credentials and signers (§4)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from blackbox.blackbox_helpers import (
    BB,
    RFC2822,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
    sid_re,
)


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    return bb.new_service("keys")


def keys_url(bb: BB, sid: str | None = None) -> str:
    base = f"/2010-04-01/Accounts/{bb.account_sid}/Keys"
    return f"{base}/{sid}.json" if sid else f"{base}.json"


def twilio_token(account_sid: str, key_sid: str, secret: str, identity: str, service_sid: str, **kw: Any) -> str:
    tok = AccessToken(account_sid, key_sid, secret, identity=identity, **kw)
    tok.add_grant(ChatGrant(service_sid=service_sid))
    return tok.to_jwt()


def test_key_lifecycle_through_twilio_package(bb: BB) -> None:
    client = bb.twilio()
    made = client.new_keys.create(friendly_name="backend")
    assert sid_re("SK").match(made.sid)
    assert made.friendly_name == "backend"
    assert isinstance(made.secret, str) and len(made.secret) >= 32
    assert made.date_created is not None

    fetched = client.keys(made.sid).fetch()
    assert fetched.sid == made.sid and fetched.friendly_name == "backend"
    assert made.sid in [k.sid for k in client.keys.list()]

    updated = client.keys(made.sid).update(friendly_name="renamed")
    assert updated.friendly_name == "renamed"
    assert client.keys(made.sid).fetch().friendly_name == "renamed"

    assert client.keys(made.sid).delete() is True
    with pytest.raises(TwilioRestException) as e:
        client.keys(made.sid).fetch()
    assert e.value.status == 404 and e.value.code == 20404
    assert made.sid not in [k.sid for k in client.keys.list()]


def test_key_through_api_v2010_account_path(bb: BB) -> None:
    client = bb.twilio()
    made = client.api.v2010.account.new_keys.create(friendly_name="v2010")
    assert client.api.v2010.account.keys(made.sid).fetch().sid == made.sid
    assert client.api.v2010.account.keys(made.sid).delete() is True


def test_key_secret_is_shown_once_and_random(bb: BB) -> None:
    r = bb.http.post(keys_url(bb), data={"FriendlyName": "once"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["secret"]) >= 32
    assert RFC2822.match(body["date_created"]) and RFC2822.match(body["date_updated"]), body
    fetched = bb.http.get(keys_url(bb, body["sid"]))
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()
    assert body["secret"] not in fetched.text
    listed = bb.http.get(keys_url(bb))
    assert body["secret"] not in listed.text
    for k in listed.json()["keys"]:
        assert "secret" not in k
    updated = bb.http.post(keys_url(bb, body["sid"]), data={"FriendlyName": "still-secret"})
    assert updated.status_code == 200 and "secret" not in updated.json()
    other = bb.new_api_key("other")
    assert other["secret"] != body["secret"]


def test_key_dates_are_rfc2822(bb: BB) -> None:
    made = bb.new_api_key("dates")
    body = bb.http.get(keys_url(bb, made["sid"])).json()
    assert RFC2822.match(body["date_created"]), body
    assert RFC2822.match(body["date_updated"]), body
    assert {"sid", "friendly_name", "date_created", "date_updated"} <= set(body)


def test_key_delete_raw_is_204_then_404(bb: BB) -> None:
    made = bb.new_api_key("del")
    r = bb.http.delete(keys_url(bb, made["sid"]))
    assert r.status_code == 204
    assert_error(bb.http.get(keys_url(bb, made["sid"])), 404, 20404)
    assert_error(bb.http.delete(keys_url(bb, made["sid"])), 404, 20404)
    assert_error(bb.http.get(keys_url(bb, "SK" + uuid.uuid4().hex)), 404, 20404)


def test_api_key_credentials_work_for_token_endpoint(bb: BB, svc: dict[str, Any]) -> None:
    key = bb.new_api_key("backend-creds")
    tok = bb.token(svc["sid"], "via-key", auth=(key["sid"], key["secret"]))
    assert tok["account_sid"] == bb.account_sid and tok["identity"] == "via-key"
    # And for the Chat v2 API through the twilio package (Client(key, secret, account_sid)).
    client = bb.twilio(key["sid"], key["secret"], bb.account_sid)
    assert client.chat.v2.services(svc["sid"]).users("via-key").fetch().sid == tok["user_sid"]


def test_api_key_with_wrong_secret_is_401_20003(bb: BB, svc: dict[str, Any]) -> None:
    key = bb.new_api_key("wrong-secret")
    c = bb.client(auth=(key["sid"], key["secret"][:-1] + ("x" if key["secret"][-1] != "x" else "y")))
    r = c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "nope"})
    assert_error(r, 401, 20003)
    assert r.headers.get("www-authenticate") == 'Basic realm="tokensvc"'


def test_api_key_cannot_manage_api_keys_403_20403(bb: BB) -> None:
    key = bb.new_api_key("manager")
    other = bb.new_api_key("victim")
    c = bb.client(auth=(key["sid"], key["secret"]))
    assert_error(c.get(keys_url(bb)), 403, 20403)
    assert_error(c.post(keys_url(bb), data={"FriendlyName": "escalate"}), 403, 20403)
    assert_error(c.get(keys_url(bb, other["sid"])), 403, 20403)
    assert_error(c.post(keys_url(bb, other["sid"]), data={"FriendlyName": "x"}), 403, 20403)
    assert_error(c.delete(keys_url(bb, other["sid"])), 403, 20403)
    assert_error(c.delete(keys_url(bb, key["sid"])), 403, 20403)
    assert bb.http.get(keys_url(bb, other["sid"])).json()["friendly_name"] == "victim"
    client = bb.twilio(key["sid"], key["secret"], bb.account_sid)
    with pytest.raises(TwilioRestException) as e:
        client.new_keys.create(friendly_name="through-sdk")
    assert e.value.status == 403 and e.value.code == 20403


def test_deleted_key_credentials_fail_at_once(bb: BB, svc: dict[str, Any]) -> None:
    key = bb.new_api_key("short-lived")
    c = bb.client(auth=(key["sid"], key["secret"]))
    assert c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "k"}).status_code == 201
    assert bb.http.delete(keys_url(bb, key["sid"])).status_code == 204
    assert_error(c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "k"}), 401, 20003)


def test_twilio_access_token_is_accepted_and_auto_provisions(bb: BB, svc: dict[str, Any]) -> None:
    key = bb.new_api_key("signer")
    identity = f"twilio-minted-{uuid.uuid4().hex[:6]}"
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}"), 404, 20404)
    token = twilio_token(bb.account_sid, key["sid"], key["secret"], identity, svc["sid"])
    c = bb.client(headers={"X-Twilio-Token": token})
    r = c.get(f"/v2/Services/{svc['sid']}/Users/{identity}")
    assert r.status_code == 200, r.text
    assert r.json()["identity"] == identity
    assert r.json()["role_sid"] == svc["default_service_role_sid"]
    admin_view = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}")
    assert admin_view.status_code == 200 and admin_view.json()["sid"] == r.json()["sid"]
    # Presenting it again reuses the same user.
    assert c.get(f"/v2/Services/{svc['sid']}/Users/{identity}").json()["sid"] == r.json()["sid"]


def test_twilio_access_token_auto_provisions_on_list(bb: BB, svc: dict[str, Any]) -> None:
    key = bb.new_api_key("signer-list")
    identity = f"lister-{uuid.uuid4().hex[:6]}"
    token = twilio_token(bb.account_sid, key["sid"], key["secret"], identity, svc["sid"])
    r = bb.client(headers={"X-Twilio-Token": token}).get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100})
    assert r.status_code == 200, r.text
    assert bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}").status_code == 200


def test_tokens_of_a_deleted_key_fail_within_a_second(bb: BB, svc: dict[str, Any]) -> None:
    key = bb.new_api_key("revoked-signer")
    token = twilio_token(bb.account_sid, key["sid"], key["secret"], "revokee", svc["sid"])
    c = bb.client(headers={"X-Twilio-Token": token})
    assert c.get(f"/v2/Services/{svc['sid']}/Users/revokee").status_code == 200
    assert bb.http.delete(keys_url(bb, key["sid"])).status_code == 204
    deadline = time.monotonic() + 1.0
    while True:
        r = c.get(f"/v2/Services/{svc['sid']}/Users/revokee")
        if r.status_code == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert_error(r, 401, 20101)


def test_twilio_access_token_of_a_key_with_another_secret_is_20101(bb: BB, svc: dict[str, Any]) -> None:
    key = bb.new_api_key("real")
    token = twilio_token(bb.account_sid, key["sid"], "x" * 32 + "not-the-secret", "forger", svc["sid"])
    assert_error(bb.client(headers={"X-Twilio-Token": token}).get(f"/v2/Services/{svc['sid']}/Users/forger"),
                 401, 20101)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/forger"), 404, 20404)


def test_twilio_access_token_of_unknown_key_is_20101(bb: BB, svc: dict[str, Any]) -> None:
    token = twilio_token(bb.account_sid, "SK" + uuid.uuid4().hex, "s" * 40, "ghost", svc["sid"])
    assert_error(bb.client(headers={"X-Twilio-Token": token}).get(f"/v2/Services/{svc['sid']}/Users/ghost"),
                 401, 20101)


def test_key_list_paging_through_twilio_package(bb: BB) -> None:
    client = bb.twilio()
    made = [client.new_keys.create(friendly_name=f"page-{i}").sid for i in range(5)]
    listed = [k.sid for k in client.keys.list(page_size=2)]
    assert len(listed) == len(set(listed))
    assert [s for s in listed if s in made] == made
    r = bb.http.get(keys_url(bb), params={"PageSize": 2})
    assert r.status_code == 200 and len(r.json()["keys"]) == 2


def test_keys_with_bad_paging_never_5xx(bb: BB) -> None:
    for params in ({"PageSize": "abc"}, {"PageSize": "-1"}, {"PageToken": "garbage"}, {"Page": "x"}):
        r = bb.http.get(keys_url(bb), params=params)
        assert 400 <= r.status_code < 500, (params, r.status_code, r.text)
        assert_error(r, r.status_code)
