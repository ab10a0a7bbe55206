"""Push credentials /v2/Credentials (SPEC §9): account credentials only, secrets write-only and sealed."""

from __future__ import annotations

import re

from sqlalchemy import select

from conftest import Api, assert_error
from tokensvc.store.push_tables import credentials

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SECRETS = {"Certificate": "-----BEGIN CERTIFICATE-----\nCERT-SECRET-1\n-----END CERTIFICATE-----",
           "PrivateKey": "PRIVATE-KEY-SECRET-2", "ApiKey": "GCM-API-KEY-SECRET-3", "Secret": "FCM-SERVER-KEY-SECRET-4"}


def test_create_every_type_with_every_field_and_no_secret(api: Api) -> None:
    for kind, fields in (("apn", {"Certificate": SECRETS["Certificate"], "PrivateKey": SECRETS["PrivateKey"]}),
                         ("gcm", {"ApiKey": SECRETS["ApiKey"]}), ("fcm", {"Secret": SECRETS["Secret"]})):
        r = api.post("/v2/Credentials", {"Type": kind, "FriendlyName": f"{kind} cred", **fields})
        assert r.status_code == 201, r.text
        body = r.json()
        assert set(body) == {"sid", "account_sid", "friendly_name", "type", "sandbox", "date_created",
                             "date_updated", "url"}
        assert re.fullmatch(r"CR[0-9a-f]{32}", body["sid"])
        assert body["account_sid"] == api.account_sid and body["type"] == kind
        assert body["friendly_name"] == f"{kind} cred"
        assert body["sandbox"] == ("False" if kind == "apn" else None)
        assert ISO.fullmatch(body["date_created"]) and ISO.fullmatch(body["date_updated"])
        assert body["url"] == f"http://testserver/v2/Credentials/{body['sid']}"
        for value in SECRETS.values():
            assert value not in r.text
        fetched = api.get(f"/v2/Credentials/{body['sid']}")
        assert fetched.status_code == 200 and fetched.json() == body


def test_apn_sandbox_is_shown_as_twilio_shows_it(api: Api) -> None:
    r = api.post("/v2/Credentials", {"Type": "apn", "Sandbox": "true"})
    assert r.status_code == 201 and r.json()["sandbox"] == "True"
    sid = r.json()["sid"]
    assert api.post(f"/v2/Credentials/{sid}", {"Sandbox": "false"}).json()["sandbox"] == "False"
    assert_error(api.post("/v2/Credentials", {"Type": "apn", "Sandbox": "maybe"}), 400, 20001)


def test_secrets_are_sealed_at_rest_and_kept_on_update(api: Api) -> None:
    sid = api.post("/v2/Credentials", {"Type": "fcm", "Secret": SECRETS["Secret"]}).json()["sid"]
    ctx = api.app.state.ctx
    stored = ctx.db.call(lambda conn: conn.execute(select(credentials).where(credentials.c.sid == sid)).one()._mapping)
    assert SECRETS["Secret"] not in str(dict(stored))
    assert stored["secrets_enc"].startswith("v1:")
    assert SECRETS["Secret"] in ctx.box.decrypt(stored["secrets_enc"], f"credential:{sid}")
    r = api.post(f"/v2/Credentials/{sid}", {"FriendlyName": "renamed"})
    assert r.status_code == 200 and r.json()["friendly_name"] == "renamed"
    r = api.post(f"/v2/Credentials/{sid}", {"Secret": "ROTATED-SECRET-5"})
    assert r.status_code == 200 and "ROTATED-SECRET-5" not in r.text
    sealed = ctx.db.call(lambda conn: conn.execute(select(credentials.c.secrets_enc)
                                                   .where(credentials.c.sid == sid)).scalar_one())
    assert "ROTATED-SECRET-5" in ctx.box.decrypt(sealed, f"credential:{sid}")


def test_list_pages_the_accounts_credentials_only(api: Api) -> None:
    made = [api.post("/v2/Credentials", {"Type": "gcm", "FriendlyName": f"c{i}"}).json()["sid"] for i in range(3)]
    other = api.new_account()
    api.post("/v2/Credentials", {"Type": "gcm"}, auth=other)
    r = api.get("/v2/Credentials", params={"PageSize": 2})
    assert r.status_code == 200
    body = r.json()
    assert [c["sid"] for c in body["credentials"]] == made[:2]
    assert body["meta"]["key"] == "credentials" and body["meta"]["next_page_url"]
    second = api.get(body["meta"]["next_page_url"]).json()
    assert [c["sid"] for c in second["credentials"]] == made[2:]
    assert second["meta"]["next_page_url"] is None
    assert_error(api.get(f"/v2/Credentials/{made[0]}", auth=other), 404, 20404)
    assert_error(api.delete(f"/v2/Credentials/{made[0]}", auth=other), 404, 20404)


def test_errors_never_echo_a_secret(api: Api) -> None:
    r = api.post("/v2/Credentials", {"Secret": SECRETS["Secret"]})
    assert_error(r, 400, 20001)
    assert SECRETS["Secret"] not in r.text
    r = api.post("/v2/Credentials", {"Type": "sms", "Secret": SECRETS["Secret"]})
    assert_error(r, 400, 20001)
    assert SECRETS["Secret"] not in r.text
    r = api.post("/v2/Credentials", {"Type": "fcm", "FriendlyName": "x" * 65, "Secret": SECRETS["Secret"]})
    assert_error(r, 400, 20001)
    assert SECRETS["Secret"] not in r.text


def test_only_account_credentials_manage_credentials(api: Api, service: dict) -> None:
    key = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {"FriendlyName": "k"}).json()
    assert_error(api.get("/v2/Credentials", auth=(key["sid"], key["secret"])), 403, 20403)
    assert_error(api.post("/v2/Credentials", {"Type": "fcm"}, auth=(key["sid"], key["secret"])), 403, 20403)
    token = api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": "alice"}).json()["token"]
    assert_error(api.get("/v2/Credentials", auth=None, headers={"X-Twilio-Token": token}), 403, 20403)
    assert_error(api.get("/v2/Credentials", auth=None), 401, 20003)


def test_delete_is_204_then_404(api: Api) -> None:
    sid = api.post("/v2/Credentials", {"Type": "fcm"}).json()["sid"]
    assert api.delete(f"/v2/Credentials/{sid}").status_code == 204
    assert_error(api.get(f"/v2/Credentials/{sid}"), 404, 20404)
    assert_error(api.delete(f"/v2/Credentials/{sid}"), 404, 20404)
    assert_error(api.get("/v2/Credentials/not-a-sid"), 404, 20404)
