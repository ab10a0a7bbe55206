"""Push: Credentials, Bindings, registration and `is_notifiable`, from outside (SPEC §9, issue 13).

Raw HTTP, websockets and the official `twilio` package only; field names from Twilio's Chat v2
OpenAPI (`chat.v2.credential`, `chat.v2.service.binding`, `chat.v2.service.user.user_binding`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from twilio.base.exceptions import TwilioRestException
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from blackbox.blackbox_helpers import (
    BB,
    ISO_Z,
    META_KEYS,
    PG_URL,
    assert_error,
    assert_not_5xx,
    bb,  # noqa: F401  (the server fixture, module-scoped)
    form,
    sid_re,
)

CREDENTIAL_FIELDS = {"sid", "account_sid", "friendly_name", "type", "sandbox", "date_created", "date_updated", "url"}
BINDING_FIELDS = {"sid", "account_sid", "service_sid", "date_created", "date_updated", "endpoint", "identity",
                  "credential_sid", "binding_type", "message_types", "url", "links"}
USER_BINDING_FIELDS = {"sid", "account_sid", "service_sid", "date_created", "date_updated", "endpoint", "identity",
                       "user_sid", "credential_sid", "binding_type", "message_types", "url"}
MESSAGE_TYPES = ["removed_from_channel", "new_message", "added_to_channel", "invited_to_channel"]


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def secret(kind: str) -> str:
    """A recognisable secret: grep-able in every response and the server log."""
    return f"SECRET-{kind}-{uuid.uuid4().hex}"


def new_credential(bb: BB, kind: str = "fcm", **data: str) -> dict[str, Any]:
    body = {"Type": kind, **data}
    if kind == "fcm":
        body.setdefault("Secret", secret("fcm"))
    elif kind == "gcm":
        body.setdefault("ApiKey", secret("gcm"))
    r = bb.http.post("/v2/Credentials", data=body)
    assert r.status_code == 201, r.text
    return r.json()


def reachable_service(bb: BB, name: str = "push") -> dict[str, Any]:
    svc = bb.new_service(name)
    r = bb.http.post(f"/v2/Services/{svc['sid']}", data={"ReachabilityEnabled": "true"})
    assert r.status_code == 200 and r.json()["reachability_enabled"] is True
    return svc


def bindings_url(svc_sid: str) -> str:
    return f"/v2/Services/{svc_sid}/Bindings"


def register(bb: BB, svc_sid: str, identity: str, cred: dict[str, Any], client: httpx.Client | None = None,
             status: int = 201, **data: str) -> dict[str, Any]:
    body = {"BindingType": cred["type"], "Address": uid("device-token"), "CredentialSid": cred["sid"],
            "Endpoint": uid("endpoint"), **data}
    if client is None:
        body["Identity"] = identity
    r = (client or bb.http).post(bindings_url(svc_sid), data=body)
    assert r.status_code == status, r.text
    return r.json()


def notifiable(bb: BB, svc_sid: str, identity: str) -> Any:
    r = bb.http.get(f"/v2/Services/{svc_sid}/Users/{identity}")
    assert r.status_code == 200, r.text
    return r.json()["is_notifiable"]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def twilio_token(bb: BB, svc_sid: str, identity: str, **grant: str) -> str:
    key = bb.new_api_key("push-signer")
    at = AccessToken(bb.account_sid, key["sid"], key["secret"], identity=identity)
    at.add_grant(ChatGrant(service_sid=svc_sid, **grant))
    return at.to_jwt()


# --- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, data", [
    ("fcm", {"Secret": "fcm"}), ("gcm", {"ApiKey": "gcm"}),
    ("apn", {"Certificate": "cert", "PrivateKey": "key", "Sandbox": "true"}),
])
def test_credential_fields_and_secrets_never_returned(bb: BB, kind: str, data: dict[str, str]) -> None:
    secrets = {k: secret(v) for k, v in data.items() if k != "Sandbox"}
    body = {**data, **secrets}
    r = bb.http.post("/v2/Credentials", data={"Type": kind, "FriendlyName": "creds", **body})
    assert r.status_code == 201, r.text
    cred = r.json()
    assert set(cred) == CREDENTIAL_FIELDS
    assert sid_re("CR").match(cred["sid"])
    assert cred["account_sid"] == bb.account_sid and cred["type"] == kind and cred["friendly_name"] == "creds"
    assert ISO_Z.match(cred["date_created"]) and ISO_Z.match(cred["date_updated"])
    assert cred["url"] == f"{bb.base}/v2/Credentials/{cred['sid']}"
    if kind == "apn":
        assert cred["sandbox"] == "True"  # Twilio shows the boolean as a string
    answers = [r, bb.http.get(f"/v2/Credentials/{cred['sid']}"),
               bb.http.get("/v2/Credentials", params={"PageSize": 100}),
               bb.http.post(f"/v2/Credentials/{cred['sid']}", data={"FriendlyName": "renamed", **secrets}),
               bb.http.post("/v2/Credentials", data={"Type": "bogus", **secrets}),
               bb.http.post(f"/v2/Credentials/{cred['sid']}", data={"FriendlyName": "x" * 65, **secrets})]
    assert answers[3].status_code == 200 and answers[3].json()["friendly_name"] == "renamed"
    assert answers[4].status_code == 400 and answers[5].status_code == 400
    for answer in answers:
        for s in secrets.values():
            assert s not in answer.text
            assert s not in json.dumps(dict(answer.headers))
    log = Path(bb.server.log_path).read_text(errors="replace")
    for s in secrets.values():
        assert s not in log


def test_credentials_through_twilio_package(bb: BB) -> None:
    creds = bb.twilio().chat.v2.credentials
    s = secret("pkg")
    made = creds.create(type="fcm", secret=s, friendly_name="pkg")
    assert made.sid.startswith("CR") and made.type == "fcm" and made.friendly_name == "pkg"
    assert creds(made.sid).fetch().sid == made.sid
    assert made.sid in [c.sid for c in creds.list()]
    assert creds(made.sid).update(friendly_name="pkg2").friendly_name == "pkg2"
    apn = creds.create(type="apn", certificate=secret("cert"), private_key=secret("pk"), sandbox=False)
    assert apn.sandbox == "False"
    assert creds(made.sid).delete() is True
    with pytest.raises(TwilioRestException) as e:
        creds(made.sid).fetch()
    assert e.value.status == 404 and e.value.code == 20404
    assert s not in Path(bb.server.log_path).read_text(errors="replace")


def test_credential_list_meta(bb: BB) -> None:
    new_credential(bb)
    body = bb.http.get("/v2/Credentials", params={"PageSize": 1}).json()
    assert set(body) == {"credentials", "meta"} and set(body["meta"]) == META_KEYS
    assert body["meta"]["key"] == "credentials" and len(body["credentials"]) == 1
    assert all(set(c) == CREDENTIAL_FIELDS for c in body["credentials"])


def test_credential_validation(bb: BB) -> None:
    body = assert_error(bb.http.post("/v2/Credentials", data={"Secret": "x"}), 400, 20001)
    assert "Type" in body["message"]
    assert_error(bb.http.post("/v2/Credentials", data={"Type": "sms", "Secret": "x"}), 400, 20001)
    assert_error(bb.http.post("/v2/Credentials", data={"Type": "apn", "Sandbox": "maybe"}), 400, 20001)
    r = bb.http.post("/v2/Credentials", data={"Type": "fcm", "Secret": "x", "FriendlyName": "f" * 65})
    assert_error(r, 400)
    assert new_credential(bb, FriendlyName="f" * 64)["friendly_name"] == "f" * 64
    assert_error(bb.http.get(f"/v2/Credentials/CR{uuid.uuid4().hex}"), 404, 20404)
    assert_error(bb.http.get("/v2/Credentials/garbage"), 404, 20404)


def test_credentials_are_basic_only_and_per_account(bb: BB) -> None:
    cred = new_credential(bb)
    svc = bb.new_service("cred-client")
    tok = bb.client(headers={"X-Twilio-Token": bb.token(svc["sid"], uid("c"))["token"]})
    for r in (tok.get("/v2/Credentials"), tok.get(f"/v2/Credentials/{cred['sid']}"),
              tok.post("/v2/Credentials", data={"Type": "fcm", "Secret": "x"}),
              tok.delete(f"/v2/Credentials/{cred['sid']}")):
        assert r.status_code in (401, 403), r.text
        assert_error(r, r.status_code, 20403 if r.status_code == 403 else 20003)
    assert bb.http.get(f"/v2/Credentials/{cred['sid']}").status_code == 200
    other_sid, other_token = bb.new_account()
    other = bb.client(auth=(other_sid, other_token))
    assert_error(other.get(f"/v2/Credentials/{cred['sid']}"), 404, 20404)
    assert_error(other.delete(f"/v2/Credentials/{cred['sid']}"), 404, 20404)
    assert cred["sid"] not in other.get("/v2/Credentials", params={"PageSize": 100}).text
    assert_error(bb.client().get("/v2/Credentials"), 401, 20003)


@pytest.mark.skipif(bool(PG_URL), reason="inspects the SQLite database files")
def test_credential_secret_not_in_clear_in_sqlite_files(bb: BB) -> None:
    s = secret("at-rest")
    new_credential(bb, Secret=s)
    db = Path(bb.server.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///"))
    for path in db.parent.iterdir():
        if path.name.startswith(db.name):
            assert s.encode() not in path.read_bytes(), path.name


# --- registration and bindings --------------------------------------------------------------


def test_register_by_basic_fields_and_same_key_is_200(bb: BB) -> None:
    svc = bb.new_service("reg")
    cred = new_credential(bb)
    u = bb.new_user(svc["sid"], uid("dev"))
    address = secret("address")
    b = register(bb, svc["sid"], u["identity"], cred, Address=address, Endpoint="ep-1")
    assert set(b) == BINDING_FIELDS
    assert sid_re("BS").match(b["sid"])
    assert b["account_sid"] == bb.account_sid and b["service_sid"] == svc["sid"]
    assert b["identity"] == u["identity"] and b["endpoint"] == "ep-1"
    assert b["credential_sid"] == cred["sid"] and b["binding_type"] == "fcm"
    assert b["message_types"] == MESSAGE_TYPES
    assert ISO_Z.match(b["date_created"]) and ISO_Z.match(b["date_updated"])
    assert b["url"] == f"{bb.base}/v2/Services/{svc['sid']}/Bindings/{b['sid']}"
    assert b["links"] == {"user": f"{bb.base}/v2/Services/{svc['sid']}/Users/{u['sid']}"}
    again = register(bb, svc["sid"], u["identity"], cred, status=200, Address=secret("address2"), Endpoint="ep-1")
    assert again["sid"] == b["sid"]
    other = register(bb, svc["sid"], u["identity"], cred, Endpoint="ep-2")
    assert other["sid"] != b["sid"]
    fetched = bb.http.get(b["url"])
    assert fetched.status_code == 200 and fetched.json()["sid"] == b["sid"]
    listed = bb.http.get(bindings_url(svc["sid"]))
    for answer in (fetched, listed, bb.http.get(f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Bindings")):
        assert address not in answer.text and "address" not in answer.json()
    assert address not in Path(bb.server.log_path).read_text(errors="replace")


def test_registration_errors(bb: BB) -> None:
    svc = bb.new_service("reg-err")
    fcm, apn = new_credential(bb), new_credential(bb, "apn", Certificate="c", PrivateKey="k")
    u = bb.new_user(svc["sid"], uid("dev"))
    url = bindings_url(svc["sid"])
    good = {"Identity": u["identity"], "BindingType": "fcm", "Address": "tok", "CredentialSid": fcm["sid"],
            "Endpoint": "ep"}

    def without(*keys: str, **extra: str) -> dict[str, str]:
        return {**{k: v for k, v in good.items() if k not in keys}, **extra}

    assert_error(bb.http.post(url, data=without("BindingType")), 400, 20001)
    assert_error(bb.http.post(url, data=without("Address")), 400, 20001)
    assert_error(bb.http.post(url, data=without(BindingType="sms")), 400, 50209)
    assert_error(bb.http.post(url, data=without(CredentialSid="CR" + uuid.uuid4().hex)), 400, 52002)
    assert_error(bb.http.post(url, data=without(CredentialSid="garbage")), 400, 52002)
    assert_error(bb.http.post(url, data=without(CredentialSid=apn["sid"])), 400, 52003)
    assert_error(bb.http.post(url, data=without(BindingType="apn")), 400, 52003)
    assert_error(bb.http.post(url, data=without("Identity")), 400, 20001)
    ghost = uid("ghost")
    r = bb.http.post(url, data=without(Identity=ghost))
    assert_error(r, 404, 20404)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{ghost}"), 404, 20404)
    assert bb.http.get(url).json()["bindings"] == []


def test_credential_of_another_account_is_52002(bb: BB) -> None:
    other_sid, other_token = bb.new_account()
    r = bb.client(auth=(other_sid, other_token)).post("/v2/Credentials", data={"Type": "fcm", "Secret": "x"})
    assert r.status_code == 201, r.text
    svc = bb.new_service("reg-foreign")
    u = bb.new_user(svc["sid"], uid("dev"))
    r = bb.http.post(bindings_url(svc["sid"]), data={"Identity": u["identity"], "BindingType": "fcm",
                                                     "Address": "a", "CredentialSid": r.json()["sid"],
                                                     "Endpoint": "ep"})
    assert_error(r, 400, 52002)


def test_register_with_client_token_uses_grant_defaults(bb: BB) -> None:
    svc = bb.new_service("reg-client")
    cred = new_credential(bb)
    identity = uid("client")
    tok = twilio_token(bb, svc["sid"], identity, push_credential_sid=cred["sid"], endpoint_id="grant-endpoint")
    client = bb.client(headers={"X-Twilio-Token": tok})
    r = client.post(bindings_url(svc["sid"]), data={"BindingType": "fcm", "Address": "device"})
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["identity"] == identity and b["credential_sid"] == cred["sid"] and b["endpoint"] == "grant-endpoint"
    again = client.post(bindings_url(svc["sid"]), data={"BindingType": "fcm", "Address": "device2"})
    assert again.status_code == 200 and again.json()["sid"] == b["sid"]
    # A client registers itself only: an Identity naming someone else does not change whose binding it is.
    other = bb.new_user(svc["sid"], uid("other"))
    r = client.post(bindings_url(svc["sid"]), data={"BindingType": "fcm", "Address": "d", "Endpoint": "e2",
                                                    "Identity": other["identity"]})
    assert r.status_code in (201, 403), r.text
    if r.status_code == 201:
        assert r.json()["identity"] == identity
    assert bb.http.get(bindings_url(svc["sid"]), params={"Identity": other["identity"]}).json()["bindings"] == []


def test_register_without_credential_anywhere_is_an_error_not_500(bb: BB) -> None:
    svc = bb.new_service("reg-nocred")
    identity = uid("client")
    client = bb.client(headers={"X-Twilio-Token": bb.token(svc["sid"], identity)["token"]})
    r = client.post(bindings_url(svc["sid"]), data={"BindingType": "fcm", "Address": "device"})
    assert_error(r, 400)


def test_binding_lists_filters_and_paging(bb: BB) -> None:
    svc = bb.new_service("bind-list")
    fcm, gcm = new_credential(bb), new_credential(bb, "gcm")
    apn = new_credential(bb, "apn", Certificate="c", PrivateKey="k")
    a, b = bb.new_user(svc["sid"], uid("a")), bb.new_user(svc["sid"], uid("b"))
    made = [register(bb, svc["sid"], a["identity"], fcm), register(bb, svc["sid"], a["identity"], apn),
            register(bb, svc["sid"], b["identity"], gcm), register(bb, svc["sid"], b["identity"], fcm)]
    url = bindings_url(svc["sid"])
    body = bb.http.get(url).json()
    assert set(body) == {"bindings", "meta"} and set(body["meta"]) == META_KEYS and body["meta"]["key"] == "bindings"
    assert [x["sid"] for x in body["bindings"]] == [m["sid"] for m in made]
    assert all(set(x) == BINDING_FIELDS for x in body["bindings"])
    got = bb.http.get(url, params=[("BindingType", "fcm"), ("BindingType", "gcm")]).json()["bindings"]
    assert [x["sid"] for x in got] == [made[0]["sid"], made[2]["sid"], made[3]["sid"]]
    got = bb.http.get(url, params=[("Identity", b["identity"])]).json()["bindings"]
    assert [x["sid"] for x in got] == [made[2]["sid"], made[3]["sid"]]
    got = bb.http.get(url, params=[("Identity", a["identity"]), ("Identity", b["identity"]),
                                   ("BindingType", "fcm")]).json()["bindings"]
    assert [x["sid"] for x in got] == [made[0]["sid"], made[3]["sid"]]
    page = bb.http.get(url, params=[("BindingType", "fcm"), ("BindingType", "apn"), ("Identity", a["identity"]),
                                    ("Identity", b["identity"]), ("PageSize", "1")]).json()
    q = query_of(page["meta"]["next_page_url"])
    assert sorted(q["BindingType"]) == ["apn", "fcm"] and sorted(q["Identity"]) == sorted([a["identity"],
                                                                                          b["identity"]])
    seen = [x["sid"] for x in page["bindings"]]
    while page["meta"]["next_page_url"]:
        page = bb.http.get(page["meta"]["next_page_url"]).json()
        seen += [x["sid"] for x in page["bindings"]]
    assert seen == [made[0]["sid"], made[1]["sid"], made[3]["sid"]]
    assert_error(bb.http.get(url, params={"BindingType": "sms"}), 400, 50209)
    # The user's bindings.
    ub = f"/v2/Services/{svc['sid']}/Users/{a['identity']}/Bindings"
    body = bb.http.get(ub).json()
    assert set(body) == {"bindings", "meta"} and body["meta"]["key"] == "bindings"
    assert [x["sid"] for x in body["bindings"]] == [made[0]["sid"], made[1]["sid"]]
    for x in body["bindings"]:
        assert set(x) == USER_BINDING_FIELDS
        assert x["user_sid"] == a["sid"] and x["message_types"] == MESSAGE_TYPES
        assert x["url"] == f"{bb.base}/v2/Services/{svc['sid']}/Users/{a['sid']}/Bindings/{x['sid']}"
    got = bb.http.get(ub, params=[("BindingType", "apn")]).json()["bindings"]
    assert [x["sid"] for x in got] == [made[1]["sid"]]
    page = bb.http.get(ub, params=[("BindingType", "apn"), ("BindingType", "fcm"), ("PageSize", "1")]).json()
    assert sorted(query_of(page["meta"]["next_page_url"])["BindingType"]) == ["apn", "fcm"]
    assert_error(bb.http.get(ub, params={"BindingType": "sms"}), 400, 50209)
    r = bb.http.get(ub, params={"PageSize": 100})
    assert r.status_code == 200 and r.json()["meta"]["page_size"] <= 50


def test_bindings_through_twilio_package(bb: BB) -> None:
    svc = bb.new_service("bind-pkg")
    fcm, apn = new_credential(bb), new_credential(bb, "apn", Certificate="c", PrivateKey="k")
    u = bb.new_user(svc["sid"], uid("pkg"))
    f = register(bb, svc["sid"], u["identity"], fcm)
    a = register(bb, svc["sid"], u["identity"], apn)
    service = bb.twilio().chat.v2.services(svc["sid"])
    assert [x.sid for x in service.bindings.list(binding_type=["apn"])] == [a["sid"]]
    assert [x.sid for x in service.bindings.list(identity=[u["identity"]])] == [f["sid"], a["sid"]]
    fetched = service.bindings(f["sid"]).fetch()
    assert fetched.binding_type == "fcm" and fetched.message_types == MESSAGE_TYPES
    ub = service.users(u["sid"]).user_bindings
    assert [x.sid for x in ub.list()] == [f["sid"], a["sid"]]
    assert ub(a["sid"]).fetch().user_sid == u["sid"]
    assert ub(a["sid"]).delete() is True
    assert service.bindings(f["sid"]).delete() is True
    assert service.bindings.list() == []
    with pytest.raises(TwilioRestException) as e:
        service.bindings(f["sid"]).fetch()
    assert e.value.code == 20404


def test_binding_fetch_delete_404s(bb: BB) -> None:
    svc = bb.new_service("bind-404")
    cred = new_credential(bb)
    a, b = bb.new_user(svc["sid"], uid("a")), bb.new_user(svc["sid"], uid("b"))
    ba = register(bb, svc["sid"], a["identity"], cred)
    assert_error(bb.http.get(f"{bindings_url(svc['sid'])}/BS{uuid.uuid4().hex}"), 404, 20404)
    # a's binding is not b's.
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{b['sid']}/Bindings/{ba['sid']}"), 404, 20404)
    assert_error(bb.http.delete(f"/v2/Services/{svc['sid']}/Users/{b['sid']}/Bindings/{ba['sid']}"), 404, 20404)
    other = bb.new_service("bind-404-other")
    assert_error(bb.http.get(f"{bindings_url(other['sid'])}/{ba['sid']}"), 404, 20404)
    assert_error(bb.http.delete(f"{bindings_url(other['sid'])}/{ba['sid']}"), 404, 20404)
    assert bb.http.get(f"{bindings_url(svc['sid'])}/{ba['sid']}").status_code == 200
    r = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{a['identity']}/Bindings/{ba['sid']}")
    assert r.status_code == 200 and set(r.json()) == USER_BINDING_FIELDS
    assert bb.http.delete(f"/v2/Services/{svc['sid']}/Users/{a['identity']}/Bindings/{ba['sid']}").status_code == 204
    assert_error(bb.http.delete(f"{bindings_url(svc['sid'])}/{ba['sid']}"), 404, 20404)


def test_client_sees_and_deletes_only_its_own_bindings(bb: BB) -> None:
    svc = bb.new_service("bind-own")
    cred = new_credential(bb)
    me, other = uid("me"), uid("other")
    client = bb.client(headers={"X-Twilio-Token": bb.token(svc["sid"], me)["token"]})
    mine = register(bb, svc["sid"], me, cred, client=client)
    bb.new_user(svc["sid"], other)
    theirs = register(bb, svc["sid"], other, cred)
    r = client.get(bindings_url(svc["sid"]))
    if r.status_code == 200:
        assert [x["sid"] for x in r.json()["bindings"]] == [mine["sid"]]
    else:
        assert_error(r, 403, 20403)
    assert [x["sid"] for x in client.get(f"/v2/Services/{svc['sid']}/Users/{me}/Bindings").json()["bindings"]] == [
        mine["sid"]]
    assert_error(client.get(f"/v2/Services/{svc['sid']}/Users/{other}/Bindings"), 403, 20403)
    assert_error(client.delete(f"{bindings_url(svc['sid'])}/{theirs['sid']}"), 403, 20403)
    assert_error(client.delete(f"/v2/Services/{svc['sid']}/Users/{other}/Bindings/{theirs['sid']}"), 403, 20403)
    assert bb.http.get(f"{bindings_url(svc['sid'])}/{theirs['sid']}").status_code == 200
    assert client.delete(f"{bindings_url(svc['sid'])}/{mine['sid']}").status_code == 204


def test_register_over_the_connection(bb: BB) -> None:
    svc = reachable_service(bb, "bind-ws")
    cred = new_credential(bb)
    identity = uid("ws")
    tok = twilio_token(bb, svc["sid"], identity, push_credential_sid=cred["sid"], endpoint_id="ws-endpoint")
    ws_url = bb.base.replace("http://", "ws://", 1) + "/v2/Connect"

    async def run() -> dict[str, Any]:
        async with websockets.connect(ws_url, additional_headers={"X-Twilio-Token": tok}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connected"
            await ws.send(json.dumps({"type": "registerPush", "BindingType": "fcm", "Address": "ws-device"}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert frame["type"] == "pushRegistered", frame
            await ws.send(json.dumps({"type": "registerPush", "BindingType": "sms", "Address": "x"}))
            err = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert "50209" in json.dumps(err), err
            return frame["binding"]

    binding = asyncio.run(run())
    assert set(binding) == BINDING_FIELDS
    assert binding["identity"] == identity and binding["endpoint"] == "ws-endpoint"
    assert binding["credential_sid"] == cred["sid"] and "ws-device" not in json.dumps(binding)
    assert bb.http.get(f"{bindings_url(svc['sid'])}/{binding['sid']}").json()["sid"] == binding["sid"]
    assert notifiable(bb, svc["sid"], identity) is True


# --- is_notifiable --------------------------------------------------------------------------


def test_is_notifiable_through_every_state(bb: BB) -> None:
    svc = reachable_service(bb, "notifiable")
    cred = new_credential(bb)
    u = bb.new_user(svc["sid"], uid("n"))
    assert notifiable(bb, svc["sid"], u["identity"]) is None  # never registered
    b1 = register(bb, svc["sid"], u["identity"], cred)
    assert notifiable(bb, svc["sid"], u["identity"]) is True
    b2 = register(bb, svc["sid"], u["identity"], cred)
    listed = bb.http.get(f"/v2/Services/{svc['sid']}/Users").json()["users"]
    assert all(x["is_notifiable"] is None for x in listed)
    assert bb.http.delete(f"{bindings_url(svc['sid'])}/{b1['sid']}").status_code == 204
    assert notifiable(bb, svc["sid"], u["identity"]) is True
    assert bb.http.delete(f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Bindings/{b2['sid']}").status_code == 204
    assert notifiable(bb, svc["sid"], u["identity"]) is False  # all gone
    register(bb, svc["sid"], u["identity"], cred)
    assert notifiable(bb, svc["sid"], u["identity"]) is True
    # Reachability off: null whatever the bindings.
    assert bb.http.post(f"/v2/Services/{svc['sid']}", data={"ReachabilityEnabled": "false"}).status_code == 200
    assert notifiable(bb, svc["sid"], u["identity"]) is None
    assert bb.twilio().chat.v2.services(svc["sid"]).users(u["sid"]).fetch().is_notifiable is None


def test_is_notifiable_false_after_credential_delete(bb: BB) -> None:
    svc = reachable_service(bb, "notifiable-cred")
    cred = new_credential(bb)
    keep = new_credential(bb, "gcm")
    u, v = bb.new_user(svc["sid"], uid("n")), bb.new_user(svc["sid"], uid("m"))
    register(bb, svc["sid"], u["identity"], cred)
    register(bb, svc["sid"], v["identity"], cred)
    kept = register(bb, svc["sid"], v["identity"], keep)
    assert bb.http.delete(f"/v2/Credentials/{cred['sid']}").status_code == 204
    assert [x["sid"] for x in bb.http.get(bindings_url(svc["sid"])).json()["bindings"]] == [kept["sid"]]
    assert notifiable(bb, svc["sid"], u["identity"]) is False
    assert notifiable(bb, svc["sid"], v["identity"]) is True
    assert_error(bb.http.get(f"/v2/Credentials/{cred['sid']}"), 404, 20404)


def test_user_delete_removes_bindings(bb: BB) -> None:
    svc = reachable_service(bb, "bind-cascade")
    cred = new_credential(bb)
    identity = uid("gone")
    bb.new_user(svc["sid"], identity)
    b = register(bb, svc["sid"], identity, cred)
    assert bb.http.delete(f"/v2/Services/{svc['sid']}/Users/{identity}").status_code == 204
    assert_error(bb.http.get(f"{bindings_url(svc['sid'])}/{b['sid']}"), 404, 20404)
    assert bb.http.get(bindings_url(svc["sid"]), params={"Identity": identity}).json()["bindings"] == []
    bb.new_user(svc["sid"], identity)
    assert notifiable(bb, svc["sid"], identity) is None  # a new user, never registered


# --- methods, HEAD, malformed ---------------------------------------------------------------


def test_undeclared_methods_are_405_20004_with_allow(bb: BB) -> None:
    svc = bb.new_service("push-405")
    cred = new_credential(bb)
    u = bb.new_user(svc["sid"], uid("m"))
    b = register(bb, svc["sid"], u["identity"], cred)
    cases = [("/v2/Credentials", ["PUT", "PATCH", "DELETE"]), (f"/v2/Credentials/{cred['sid']}", ["PUT", "PATCH"]),
             (bindings_url(svc["sid"]), ["PUT", "PATCH", "DELETE"]),
             (f"{bindings_url(svc['sid'])}/{b['sid']}", ["PUT", "PATCH", "POST"]),
             (f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Bindings", ["PUT", "PATCH", "DELETE", "POST"]),
             (f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Bindings/{b['sid']}", ["PUT", "PATCH", "POST"])]
    for path, methods in cases:
        for method in methods:
            r = bb.http.request(method, path, **form([("FriendlyName", "x"), ("BindingType", "fcm"),
                                                      ("Address", "a"), ("Identity", u["identity"])]))
            assert_error(r, 405, 20004)
            assert r.headers.get("allow"), (method, path)
    assert bb.http.get(f"{bindings_url(svc['sid'])}/{b['sid']}").status_code == 200
    assert bb.http.get(f"/v2/Credentials/{cred['sid']}").json()["friendly_name"] is None


def test_head_never_registers_or_creates(bb: BB) -> None:
    svc = reachable_service(bb, "push-head")
    cred = new_credential(bb)
    u = bb.new_user(svc["sid"], uid("h"))
    before = bb.http.get("/v2/Credentials", params={"PageSize": 100}).json()["credentials"]
    for path in ("/v2/Credentials", bindings_url(svc["sid"]), f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Bindings"):
        r = bb.http.request("HEAD", path, **form([("Type", "fcm"), ("Secret", "s"), ("BindingType", "fcm"),
                                                  ("Address", "a"), ("Identity", u["identity"]),
                                                  ("CredentialSid", cred["sid"])]))
        assert r.status_code in (200, 405) and r.content == b""
    assert bb.http.get("/v2/Credentials", params={"PageSize": 100}).json()["credentials"] == before
    assert bb.http.get(bindings_url(svc["sid"])).json()["bindings"] == []
    assert notifiable(bb, svc["sid"], u["identity"]) is None


@pytest.mark.parametrize("body", [b"Type=%ZZ", b"\xff\xfe", b"Type=fcm&Type=apn&Secret=x", b"Type=apn&Sandbox=%00",
                                  b"Type=fcm&Secret=%00&FriendlyName=%ED%A0%80", b"BindingType=fcm&Address=%00"])
def test_malformed_bodies_never_500(bb: BB, body: bytes) -> None:
    svc = bb.new_service("push-mal")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    cred = new_credential(bb)
    for path in ("/v2/Credentials", f"/v2/Credentials/{cred['sid']}", bindings_url(svc["sid"])):
        assert_not_5xx(bb.http.post(path, content=body, headers=headers))


@pytest.mark.parametrize("params", [{"PageSize": "x"}, {"PageSize": "0"}, {"BindingType": ""}, {"PageToken": "zz"},
                                    {"Identity": "%"}, {"Identity": "x" * 5000}, {"BindingType": "\x00"}])
def test_malformed_list_parameters_never_500(bb: BB, params: dict[str, str]) -> None:
    svc = bb.new_service("push-mal-q")
    u = bb.new_user(svc["sid"], uid("q"))
    for path in (bindings_url(svc["sid"]), f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Bindings", "/v2/Credentials"):
        assert_not_5xx(bb.http.get(path, params=params))


def test_identity_filter_with_nul_is_not_500(bb: BB) -> None:
    # SPEC §7 / brief: malformed input never 500. The same value is a clean 400 in every POST body.
    svc = bb.new_service("push-nul")
    r = bb.http.get(bindings_url(svc["sid"]), params={"Identity": "a\x00b"})
    assert_not_5xx(r)
    assert r.json()["code"] == 20001
