"""Push bindings (SPEC §9): registration, lists with filters, a client's own bindings only,
`is_notifiable` through every state, cascades; Twilio codes asserted."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from conftest import Api, assert_error
from tokensvc.sids import new_sid
from tokensvc.store.push_tables import bindings
from tokensvc.store.tables import users

ADDRESS = "DEVICE-TOKEN-SECRET-0123456789abcdef"
MESSAGE_TYPES = ["removed_from_channel", "new_message", "added_to_channel", "invited_to_channel"]


def credential(api: Api, kind: str = "fcm") -> str:
    r = api.post("/v2/Credentials", {"Type": kind, "FriendlyName": kind})
    assert r.status_code == 201, r.text
    return r.json()["sid"]


def user(api: Api, service: dict, identity: str) -> dict[str, Any]:
    r = api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": identity})
    assert r.status_code == 201, r.text
    return r.json()


def register(api: Api, service: dict, identity: str, cred: str, *, kind: str = "fcm", endpoint: str = "ep-1",
             address: str = ADDRESS, **kw: Any) -> Any:
    return api.post(f"/v2/Services/{service['sid']}/Bindings", {
        "Identity": identity, "BindingType": kind, "Address": address, "CredentialSid": cred, "Endpoint": endpoint},
        **kw)


def client_token(api: Api, service: dict, identity: str, **grant: Any) -> str:
    """A Twilio-format token of an API key of the account, its ChatGrant carrying push defaults."""
    key = api.extra.get("key")
    if key is None:
        key = api.extra["key"] = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json",
                                          {"FriendlyName": "k"}).json()
    token = AccessToken(api.account_sid, key["sid"], key["secret"], identity=identity, ttl=600)
    token.add_grant(ChatGrant(service_sid=service["sid"], **grant))
    return token.to_jwt()


def as_client(token: str) -> dict[str, Any]:
    return {"auth": None, "headers": {"X-Twilio-Token": token}}


def reachable(api: Api, service: dict, on: bool = True) -> None:
    r = api.post(f"/v2/Services/{service['sid']}", {"ReachabilityEnabled": "true" if on else "false"})
    assert r.status_code == 200, r.text


def notifiable(api: Api, service: dict, identity: str) -> Any:
    r = api.get(f"/v2/Services/{service['sid']}/Users/{identity}")
    assert r.status_code == 200, r.text
    return r.json()["is_notifiable"]


def test_registration_creates_then_updates_the_same_key(api: Api, service: dict) -> None:
    alice = user(api, service, "alice")
    cred = credential(api)
    r = register(api, service, "alice", cred)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"sid", "account_sid", "service_sid", "date_created", "date_updated", "endpoint", "identity",
                         "credential_sid", "binding_type", "message_types", "url", "links"}
    assert re.fullmatch(r"BS[0-9a-f]{32}", body["sid"])
    assert (body["account_sid"], body["service_sid"], body["identity"]) == (api.account_sid, service["sid"], "alice")
    assert (body["endpoint"], body["binding_type"], body["credential_sid"]) == ("ep-1", "fcm", cred)
    assert body["message_types"] == MESSAGE_TYPES
    assert body["url"] == f"http://testserver/v2/Services/{service['sid']}/Bindings/{body['sid']}"
    assert body["links"] == {"user": f"http://testserver/v2/Services/{service['sid']}/Users/{alice['sid']}"}
    assert ADDRESS not in r.text
    again = register(api, service, "alice", cred, address="NEW-DEVICE-TOKEN")
    assert again.status_code == 200 and again.json()["sid"] == body["sid"]
    assert "NEW-DEVICE-TOKEN" not in again.text
    other = register(api, service, "alice", cred, endpoint="ep-2")
    assert other.status_code == 201 and other.json()["sid"] != body["sid"]
    gcm = register(api, service, "alice", credential(api, "gcm"), kind="gcm")  # same endpoint, other type
    assert gcm.status_code == 201
    fetched = api.get(f"/v2/Services/{service['sid']}/Bindings/{body['sid']}")
    assert fetched.status_code == 200 and fetched.json()["sid"] == body["sid"] and ADDRESS not in fetched.text
    stored = api.app.state.ctx.db.call(lambda conn: conn.execute(
        select(bindings.c.address_enc).where(bindings.c.sid == body["sid"])).scalar_one())
    assert "NEW-DEVICE-TOKEN" not in stored and stored.startswith("v1:")


def test_registration_errors_carry_twilio_codes(api: Api, service: dict) -> None:
    user(api, service, "alice")
    cred = credential(api)
    url = f"/v2/Services/{service['sid']}/Bindings"
    assert_error(register(api, service, "alice", cred, kind="sms"), 400, 50209)
    assert_error(register(api, service, "alice", new_sid("CR")), 400, 52002)
    assert_error(register(api, service, "alice", "CR-not-a-sid"), 400, 52002)
    other = api.new_account()
    theirs = api.post("/v2/Credentials", {"Type": "fcm"}, auth=other).json()["sid"]
    assert_error(register(api, service, "alice", theirs), 400, 52002)
    assert_error(register(api, service, "alice", credential(api, "apn")), 400, 52003)
    assert_error(register(api, service, "alice", cred, kind="apn"), 400, 52003)
    assert_error(api.post(url, {"Identity": "alice", "Address": "x", "CredentialSid": cred, "Endpoint": "e"}),
                 400, 20001)
    assert_error(api.post(url, {"Identity": "alice", "BindingType": "fcm", "CredentialSid": cred, "Endpoint": "e"}),
                 400, 20001)
    assert_error(api.post(url, {"Identity": "alice", "BindingType": "fcm", "Address": "x", "Endpoint": "e"}),
                 400, 20001)
    assert_error(api.post(url, {"BindingType": "fcm", "Address": "x", "CredentialSid": cred, "Endpoint": "e"}),
                 400, 20001)
    assert_error(register(api, service, "alice", cred, address=""), 400, 20001)
    # Registration never provisions: an unknown identity is 404.
    assert_error(register(api, service, "nobody", cred), 404, 20404)
    assert api.get(f"/v2/Services/{service['sid']}/Users/nobody").status_code == 404
    assert_error(register(api, service, "alice", cred, auth=other), 404, 20404)  # another account's service
    assert_error(api.get(f"{url}?BindingType=apn&BindingType=sms"), 400, 50209)
    assert_error(api.get(f"/v2/Services/{service['sid']}/Users/alice/Bindings?BindingType=x"), 400, 50209)
    for response in (api.client.put(url, auth=api.auth),
                     api.client.put(f"{url}/{new_sid('BS')}", auth=api.auth)):
        assert_error(response, 405, 20004)


def test_registration_with_a_client_token_uses_the_grant_defaults(api: Api, service: dict) -> None:
    cred = credential(api, "apn")
    token = client_token(api, service, "dev", push_credential_sid=cred, endpoint_id="dev-iphone")
    r = api.post(f"/v2/Services/{service['sid']}/Bindings", {"BindingType": "apn", "Address": ADDRESS},
                 **as_client(token))
    assert r.status_code == 201, r.text
    assert (r.json()["identity"], r.json()["credential_sid"], r.json()["endpoint"]) == ("dev", cred, "dev-iphone")
    # Explicit fields win over the grant; another identity is not the client's to register.
    r = api.post(f"/v2/Services/{service['sid']}/Bindings", {"BindingType": "apn", "Address": "a2",
                                                             "Endpoint": "dev-ipad"}, **as_client(token))
    assert r.status_code == 201 and r.json()["endpoint"] == "dev-ipad"
    assert_error(api.post(f"/v2/Services/{service['sid']}/Bindings", {
        "BindingType": "apn", "Address": "a", "Identity": "someone-else"}, **as_client(token)), 403, 20403)
    bare = client_token(api, service, "dev")
    assert_error(api.post(f"/v2/Services/{service['sid']}/Bindings", {"BindingType": "apn", "Address": "a"},
                          **as_client(bare)), 400, 20001)


def test_lists_filter_by_type_and_identity_and_pages_keep_the_filters(api: Api, service: dict) -> None:
    for identity in ("a", "b", "c"):
        user(api, service, identity)
    fcm, apn = credential(api, "fcm"), credential(api, "apn")
    made = {}
    for identity in ("a", "b", "c"):
        made[identity, "fcm"] = register(api, service, identity, fcm).json()["sid"]
        made[identity, "apn"] = register(api, service, identity, apn, kind="apn").json()["sid"]
    url = f"/v2/Services/{service['sid']}/Bindings"
    listed = api.get(url, params={"BindingType": "apn"}).json()["bindings"]
    assert [b["sid"] for b in listed] == [made[i, "apn"] for i in ("a", "b", "c")]
    listed = api.get(url, params=[("Identity", "a"), ("Identity", "c")]).json()["bindings"]
    assert {b["sid"] for b in listed} == {made[i, t] for i in ("a", "c") for t in ("fcm", "apn")}
    listed = api.get(url, params=[("BindingType", "fcm"), ("BindingType", "gcm"), ("Identity", "b")]).json()
    assert [b["sid"] for b in listed["bindings"]] == [made["b", "fcm"]]
    page = api.get(url, params={"BindingType": "fcm", "PageSize": 2}).json()
    assert [b["sid"] for b in page["bindings"]] == [made["a", "fcm"], made["b", "fcm"]]
    assert "BindingType=fcm" in page["meta"]["next_page_url"]
    rest = api.get(page["meta"]["next_page_url"]).json()
    assert [b["sid"] for b in rest["bindings"]] == [made["c", "fcm"]] and rest["meta"]["next_page_url"] is None
    assert api.get(url).json()["meta"]["key"] == "bindings"
    mine = api.get(f"/v2/Services/{service['sid']}/Users/b/Bindings", params={"BindingType": "apn"}).json()
    assert [b["sid"] for b in mine["bindings"]] == [made["b", "apn"]]
    one = mine["bindings"][0]
    b_sid = one["user_sid"]
    assert one["url"] == f"http://testserver/v2/Services/{service['sid']}/Users/{b_sid}/Bindings/{one['sid']}"
    assert "links" not in one and one["message_types"] == MESSAGE_TYPES
    assert_error(api.get(f"/v2/Services/{service['sid']}/Users/zzz/Bindings"), 404, 20404)


def test_user_bindings_fetch_and_delete(api: Api, service: dict) -> None:
    user(api, service, "a")
    user(api, service, "b/slash")
    cred = credential(api)
    sid = register(api, service, "b/slash", cred).json()["sid"]
    base = f"/v2/Services/{service['sid']}/Users"
    r = api.get(f"{base}/b%2Fslash/Bindings/{sid}")
    assert r.status_code == 200 and r.json()["identity"] == "b/slash" and ADDRESS not in r.text
    assert api.client.head(f"{base}/b%2Fslash/Bindings/{sid}", auth=api.auth).status_code == 200
    assert_error(api.get(f"{base}/a/Bindings/{sid}"), 404, 20404)  # not a's
    assert_error(api.delete(f"{base}/a/Bindings/{sid}"), 404, 20404)
    assert_error(api.post(f"{base}/a/Bindings/{sid}"), 405, 20004)
    assert api.delete(f"{base}/b%2Fslash/Bindings/{sid}").status_code == 204
    assert_error(api.get(f"{base}/b%2Fslash/Bindings/{sid}"), 404, 20404)
    assert_error(api.get(f"/v2/Services/{service['sid']}/Bindings/{sid}"), 404, 20404)


def test_a_client_sees_and_deletes_only_its_own_bindings(api: Api, service: dict) -> None:
    cred = credential(api)
    token = client_token(api, service, "me", push_credential_sid=cred, endpoint_id="my-phone")
    mine = api.post(f"/v2/Services/{service['sid']}/Bindings", {"BindingType": "fcm", "Address": "a"},
                    **as_client(token)).json()["sid"]
    user(api, service, "other")
    theirs = register(api, service, "other", cred).json()["sid"]
    url = f"/v2/Services/{service['sid']}/Bindings"
    listed = api.get(url, **as_client(token)).json()["bindings"]
    assert [b["sid"] for b in listed] == [mine]
    assert api.get(url, params={"Identity": "me"}, **as_client(token)).json()["bindings"][0]["sid"] == mine
    assert_error(api.get(url, params={"Identity": "other"}, **as_client(token)), 403, 20403)
    assert_error(api.get(f"{url}/{theirs}", **as_client(token)), 403, 20403)
    assert_error(api.delete(f"{url}/{theirs}", **as_client(token)), 403, 20403)
    users_url = f"/v2/Services/{service['sid']}/Users"
    assert_error(api.get(f"{users_url}/other/Bindings", **as_client(token)), 403, 20403)
    assert_error(api.get(f"{users_url}/other/Bindings/{theirs}", **as_client(token)), 403, 20403)
    assert_error(api.delete(f"{users_url}/other/Bindings/{theirs}", **as_client(token)), 403, 20403)
    assert api.get(f"{url}/{theirs}").status_code == 200  # still there
    assert [b["sid"] for b in api.get(f"{users_url}/me/Bindings", **as_client(token)).json()["bindings"]] == [mine]
    assert api.get(f"{url}/{mine}", **as_client(token)).status_code == 200
    assert api.delete(f"{users_url}/me/Bindings/{mine}", **as_client(token)).status_code == 204
    again = api.post(url, {"BindingType": "fcm", "Address": "a"}, **as_client(token)).json()["sid"]
    assert api.delete(f"{url}/{again}", **as_client(token)).status_code == 204


def test_is_notifiable_through_every_state(api: Api, service: dict) -> None:
    user(api, service, "n")
    cred, other_cred = credential(api), credential(api)
    assert notifiable(api, service, "n") is None  # reachability off
    reachable(api, service)
    assert notifiable(api, service, "n") is None  # never registered
    first = register(api, service, "n", cred).json()["sid"]
    assert notifiable(api, service, "n") is True
    second = register(api, service, "n", other_cred, endpoint="ep-2").json()["sid"]
    users_list = api.get(f"/v2/Services/{service['sid']}/Users").json()["users"]
    assert [u["is_notifiable"] for u in users_list] == [None]  # always null in lists
    reachable(api, service, False)
    assert notifiable(api, service, "n") is None  # reachability off hides it
    reachable(api, service)
    assert api.delete(f"/v2/Services/{service['sid']}/Bindings/{first}").status_code == 204
    assert notifiable(api, service, "n") is True  # one is left
    assert api.delete(f"/v2/Services/{service['sid']}/Users/n/Bindings/{second}").status_code == 204
    assert notifiable(api, service, "n") is False  # all gone
    register(api, service, "n", cred)
    assert notifiable(api, service, "n") is True
    assert api.delete(f"/v2/Credentials/{cred}").status_code == 204  # its bindings go with it
    assert notifiable(api, service, "n") is False


def _count(api: Api, where: Any) -> int:
    return api.app.state.ctx.db.call(lambda conn: conn.execute(
        select(func.count()).select_from(bindings).where(where)).scalar_one())


def test_cascades_user_credential_and_service_deletion(api: Api, service: dict) -> None:
    for identity in ("u1", "u2"):
        user(api, service, identity)
    fcm, gcm = credential(api, "fcm"), credential(api, "gcm")
    for identity in ("u1", "u2"):
        register(api, service, identity, fcm)
        register(api, service, identity, gcm, kind="gcm")
    u1 = api.get(f"/v2/Services/{service['sid']}/Users/u1").json()["sid"]
    assert api.delete(f"/v2/Services/{service['sid']}/Users/u1").status_code == 204
    assert _count(api, bindings.c.user_sid == u1) == 0
    assert _count(api, bindings.c.service_sid == service["sid"]) == 2
    assert api.delete(f"/v2/Credentials/{gcm}").status_code == 204
    assert _count(api, bindings.c.credential_sid == gcm) == 0
    listed = api.get(f"/v2/Services/{service['sid']}/Bindings").json()["bindings"]
    assert [(b["identity"], b["binding_type"]) for b in listed] == [("u2", "fcm")]
    assert api.delete(f"/v2/Services/{service['sid']}").status_code == 204
    assert _count(api, bindings.c.service_sid == service["sid"]) == 0
    assert api.get(f"/v2/Credentials/{fcm}").status_code == 200  # account-level: it stays
    # A new user of a freed identity starts never-registered.
    svc = api.new_service()
    reachable(api, svc)
    user(api, svc, "u1")
    register(api, svc, "u1", fcm)
    assert api.delete(f"/v2/Services/{svc['sid']}/Users/u1").status_code == 204
    user(api, svc, "u1")
    assert notifiable(api, svc, "u1") is None
    flags = api.app.state.ctx.db.call(lambda conn: conn.execute(
        select(users.c.notifiable).where(users.c.service_sid == svc["sid"])).scalars().all())
    assert flags == [None]
