"""Push end to end (SPEC §9): a real `tokensvc serve`, the official `twilio` package, registration
by REST and over the WebSocket, and no secret in any response or in the server's log."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant
from twilio.rest import Client

from conftest import Server, start_server
from test_connect import issue, open_ws, recv

SECRETS = ("FCM-SERVER-KEY-e2e-7f3a", "APN-CERT-e2e-19c2", "APN-KEY-e2e-88d1", "GCM-API-KEY-e2e-42aa")
ADDRESSES = ("DEVICE-ADDRESS-e2e-rest-5b6c", "DEVICE-ADDRESS-e2e-ws-0d9e", "DEVICE-ADDRESS-e2e-hs-3f1a")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = start_server(tmp_path_factory.mktemp("e2e-push"), extra_env={"TOKENSVC_LOG_LEVEL": "DEBUG"})
    yield s
    s.stop()


@pytest.fixture
def client(srv: Server) -> Client:
    c = Client(srv.account_sid, srv.auth_token)
    c.chat.base_url = srv.base
    return c


def register(srv: Server, service_sid: str, **fields: str) -> httpx.Response:
    return httpx.post(f"{srv.base}/v2/Services/{service_sid}/Bindings", data=fields, auth=srv.auth)


def test_credentials_bindings_and_user_bindings_through_the_twilio_package(client: Client, srv: Server) -> None:
    fcm = client.chat.v2.credentials.create(type="fcm", friendly_name="android", secret=SECRETS[0])
    assert fcm.sid.startswith("CR") and fcm.type == "fcm" and fcm.friendly_name == "android"
    apn = client.chat.v2.credentials.create(type="apn", certificate=SECRETS[1], private_key=SECRETS[2], sandbox=True)
    assert apn.sandbox == "True"
    gcm = client.chat.v2.credentials.create(type="gcm", api_key=SECRETS[3])
    assert client.chat.v2.credentials(fcm.sid).fetch().friendly_name == "android"
    assert client.chat.v2.credentials(apn.sid).update(friendly_name="ios").friendly_name == "ios"
    assert {c.sid for c in client.chat.v2.credentials.list()} >= {fcm.sid, apn.sid, gcm.sid}

    svc = client.chat.v2.services.create(friendly_name="push")
    client.chat.v2.services(svc.sid).update(reachability_enabled=True)
    alice = client.chat.v2.services(svc.sid).users.create(identity="alice")
    assert client.chat.v2.services(svc.sid).users(alice.sid).fetch().is_notifiable is None
    r = register(srv, svc.sid, Identity="alice", BindingType="apn", Address=ADDRESSES[0], CredentialSid=apn.sid,
                 Endpoint="alice-iphone")
    assert r.status_code == 201, r.text
    r = register(srv, svc.sid, Identity="alice", BindingType="fcm", Address=ADDRESSES[0], CredentialSid=fcm.sid,
                 Endpoint="alice-pixel")
    assert r.status_code == 201, r.text
    assert client.chat.v2.services(svc.sid).users(alice.sid).fetch().is_notifiable is True

    bindings = client.chat.v2.services(svc.sid).bindings
    apns = bindings.list(binding_type=["apn"])
    assert [(b.identity, b.endpoint, b.credential_sid) for b in apns] == [("alice", "alice-iphone", apn.sid)]
    assert apns[0].message_types == ["removed_from_channel", "new_message", "added_to_channel", "invited_to_channel"]
    assert len(bindings.list(identity=["alice", "bob"])) == 2
    assert bindings(apns[0].sid).fetch().binding_type == "apn"

    user_bindings = client.chat.v2.services(svc.sid).users(alice.sid).user_bindings
    listed = user_bindings.list()
    assert {b.binding_type for b in listed} == {"apn", "fcm"} and all(b.user_sid == alice.sid for b in listed)
    assert [b.binding_type for b in user_bindings.list(binding_type=["fcm"])] == ["fcm"]
    one = user_bindings(listed[0].sid).fetch()
    assert one.endpoint == listed[0].endpoint
    assert user_bindings(one.sid).delete() is True
    assert client.chat.v2.services(svc.sid).users(alice.sid).fetch().is_notifiable is True
    assert bindings(listed[1].sid).delete() is True
    assert client.chat.v2.services(svc.sid).users(alice.sid).fetch().is_notifiable is False
    with pytest.raises(TwilioRestException) as err:
        bindings(listed[1].sid).fetch()
    assert err.value.status == 404 and err.value.code == 20404
    with pytest.raises(TwilioException) as page_err:  # the package's list raises this one for a page
        bindings.list(binding_type=["sms"])
    assert json.loads(page_err.value.args[1].text)["code"] == 50209

    # Cascade: deleting a credential deletes its bindings.
    register(srv, svc.sid, Identity="alice", BindingType="gcm", Address=ADDRESSES[0], CredentialSid=gcm.sid,
             Endpoint="alice-old")
    assert client.chat.v2.services(svc.sid).users(alice.sid).fetch().is_notifiable is True
    assert client.chat.v2.credentials(gcm.sid).delete() is True
    assert bindings.list() == []
    assert client.chat.v2.services(svc.sid).users(alice.sid).fetch().is_notifiable is False
    with pytest.raises(TwilioRestException) as err:
        client.chat.v2.credentials(gcm.sid).fetch()
    assert err.value.code == 20404


def _ws_register(srv: Server, token: str, frame: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    with open_ws(srv, token) as ws:
        connected = recv(ws)
        assert connected["type"] == "connected", connected
        ws.send(json.dumps({"type": "registerPush", **frame}))
        return connected, recv(ws)


def test_registration_over_the_connection(client: Client, srv: Server) -> None:
    cred = client.chat.v2.credentials.create(type="fcm", secret=SECRETS[0])
    svc = client.chat.v2.services.create(friendly_name="ws push")
    client.chat.v2.services(svc.sid).update(reachability_enabled=True)
    token = issue(srv, svc.sid, "carol")
    frame = {"BindingType": "fcm", "Address": ADDRESSES[1], "CredentialSid": cred.sid, "Endpoint": "carol-web"}
    connected, registered = _ws_register(srv, token, frame)
    assert registered["type"] == "pushRegistered", registered
    binding = registered["binding"]
    assert (binding["identity"], binding["endpoint"], binding["credential_sid"]) == ("carol", "carol-web", cred.sid)
    assert binding["links"]["user"].endswith(connected["user"]["sid"])
    assert ADDRESSES[1] not in json.dumps(registered)
    _, again = _ws_register(srv, token, frame)
    assert again["binding"]["sid"] == binding["sid"]
    assert client.chat.v2.services(svc.sid).users("carol").fetch().is_notifiable is True
    # Errors come back as error frames with the Twilio code, and the session stays open.
    with open_ws(srv, token) as ws:
        recv(ws)
        ws.send(json.dumps({"type": "registerPush", **frame, "BindingType": "sms"}))
        assert (error := recv(ws))["type"] == "error" and error["code"] == 50209
        ws.send(json.dumps({"type": "registerPush", **frame, "CredentialSid": "CR" + "0" * 32}))
        assert recv(ws)["code"] == 52002
        ws.send(json.dumps({"type": "registerPush", **frame, "BindingType": "apn"}))
        assert recv(ws)["code"] == 52003
        ws.send(json.dumps({"type": "registerPush", "BindingType": "fcm"}))
        assert recv(ws)["code"] == 20001
        ws.send(json.dumps({"type": "registerPush", **frame, "Endpoint": "carol-web-2"}))
        assert recv(ws)["type"] == "pushRegistered"
    # A Twilio-format token's ChatGrant supplies CredentialSid and Endpoint.
    key = httpx.post(f"{srv.base}/2010-04-01/Accounts/{srv.account_sid}/Keys.json", data={"FriendlyName": "k"},
                     auth=srv.auth).json()
    at = AccessToken(srv.account_sid, key["sid"], key["secret"], identity="dave", ttl=600)
    at.add_grant(ChatGrant(service_sid=svc.sid, push_credential_sid=cred.sid, endpoint_id="dave-phone"))
    _, registered = _ws_register(srv, at.to_jwt(), {"BindingType": "fcm", "Address": ADDRESSES[2]})
    assert registered["type"] == "pushRegistered", registered
    assert (registered["binding"]["identity"], registered["binding"]["endpoint"]) == ("dave", "dave-phone")
    listed = client.chat.v2.services(svc.sid).bindings.list(identity=["dave"])
    assert [b.sid for b in listed] == [registered["binding"]["sid"]]


def test_no_secret_or_address_in_the_server_log(client: Client, srv: Server) -> None:
    # Failures too: a refused form must not echo what it held.
    for data in ({"Type": "nope", "Secret": SECRETS[0]}, {"Type": "fcm", "FriendlyName": "x" * 65,
                                                          "Secret": SECRETS[0]}):
        r = httpx.post(f"{srv.base}/v2/Credentials", data=data, auth=srv.auth)
        assert r.status_code == 400 and SECRETS[0] not in r.text
    svc = client.chat.v2.services.create(friendly_name="log")
    r = register(srv, svc.sid, Identity="ghost", BindingType="fcm", Address=ADDRESSES[0],
                 CredentialSid="CR" + "0" * 32, Endpoint="e")
    assert r.status_code == 400 and ADDRESSES[0] not in r.text
    log = srv.logs()
    assert "request_id" in log  # the access log is being written: the grep below means something
    for secret in (*SECRETS, *ADDRESSES):
        assert secret not in log
    assert "Traceback" not in log
