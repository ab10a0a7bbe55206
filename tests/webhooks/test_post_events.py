"""Post-events (SPEC §10) end to end: a real receiver on 127.0.0.1, the outbox, the dispatcher,
Twilio's parameter names and the signature RequestValidator accepts."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from channel_helpers import channels_url, make_channel, members_url
from cli_helpers import run_cli
from conftest import Api
from tokensvc.app import create_app
from tokensvc.config import Settings
from tokensvc.store.accounts import create_account
from tokensvc.store.outbox_tables import outbox
from tokensvc.tokens import mint
from webhook_receiver import Receiver, serve

ON = {"X-Twilio-Webhook-Enabled": "true"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


def hooked(api: Api, receiver: Receiver, *filters: str, **extra: str) -> dict[str, Any]:
    svc = api.new_service()
    r = api.post(f"/v2/Services/{svc['sid']}", {"PostWebhookUrl": receiver.url, "WebhookFilters": list(filters),
                                                  **extra})
    assert r.status_code == 200, r.text
    return r.json()


def token_for(api: Api, svc: dict[str, Any], identity: str) -> dict[str, str]:
    r = api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": identity})
    assert r.status_code == 201, r.text
    return {"X-Twilio-Token": r.json()["token"]}


def minted(api: Api, svc: dict[str, Any], identity: str) -> dict[str, str]:
    """A client token for an identity not yet encountered (as a backend with an API key mints)."""
    c = api.app.state.ctx
    made = mint(c.keyring.current(), issuer=c.settings.issuer, account_sid=api.account_sid,
                service_sid=svc["sid"], identity=identity, ttl=600)
    return {"X-Twilio-Token": made.token}


def signed(api: Api, hit: Any) -> bool:
    validator = RequestValidator(api.auth_token)
    params = hit.params if hit.method == "POST" else {}
    return validator.validate(hit.url, params, hit.headers.get("x-twilio-signature", ""))


def outbox_rows(api: Api, service_sid: str) -> list[Any]:
    return api.app.state.ctx.db.call(lambda conn: conn.execute(
        select(outbox).where(outbox.c.service_sid == service_sid)).all())


def test_token_endpoint_first_encounter_posts_on_user_added(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded")
    r = api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "alice"})
    assert r.status_code == 201
    [hit] = receiver.wait(1, EventType="onUserAdded")
    assert hit.method == "POST"
    p = hit.params
    assert p["AccountSid"] == api.account_sid and p["InstanceSid"] == svc["sid"]
    assert p["Source"] == "API" and "ClientIdentity" not in p and p["RetryCount"] == "0"
    assert p["Identity"] == "alice" and p["UserSid"].startswith("US")
    assert p["RoleSid"] == svc["default_service_role_sid"]
    assert p["DateCreated"].endswith("Z") and p["Attributes"] == "{}"
    assert hit.headers["i-twilio-idempotency-token"]
    assert signed(api, hit)
    # a second token for the same identity provisions nothing
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "alice"}).status_code == 201
    time.sleep(0.6)
    assert len(receiver.matching(EventType="onUserAdded")) == 1


def test_presented_token_first_encounter_is_sdk_with_client_identity(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded")
    r = api.client.get(f"/v2/Services/{svc['sid']}/Users/bob", headers=minted(api, svc, "bob"))
    assert r.status_code == 200, r.text
    [hit] = receiver.wait(1, EventType="onUserAdded")
    assert hit.params["Source"] == "SDK" and hit.params["ClientIdentity"] == "bob"
    assert hit.params["Identity"] == "bob" and signed(api, hit)


def test_user_create_posts_on_user_added_and_basic_updates_need_the_header(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded", "onUserUpdated", "onUserRemoved")
    users = f"/v2/Services/{svc['sid']}/Users"
    made = api.post(users, {"Identity": "carol", "FriendlyName": "C"}).json()
    [added] = receiver.wait(1, EventType="onUserAdded")
    assert added.params["FriendlyName"] == "C" and added.params["UserSid"] == made["sid"]
    assert api.post(f"{users}/carol", {"FriendlyName": "quiet"}).status_code == 200
    assert api.post(f"{users}/carol", {"FriendlyName": "loud"}, headers=ON).status_code == 200
    [updated] = receiver.wait(1, EventType="onUserUpdated")
    assert updated.params["FriendlyName"] == "loud" and updated.params["Source"] == "API"
    assert api.delete(f"{users}/carol", headers=ON).status_code == 204
    [removed] = receiver.wait(1, EventType="onUserRemoved")
    assert removed.params["UserSid"] == made["sid"] and "Identity" not in removed.params
    assert len(receiver.matching(EventType="onUserUpdated")) == 1
    assert all(signed(api, h) for h in receiver.hits)


def test_client_update_always_posts(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserUpdated")
    headers = token_for(api, svc, "dave")
    r = api.client.post(f"/v2/Services/{svc['sid']}/Users/dave", data={"FriendlyName": "D"}, headers=headers)
    assert r.status_code == 200, r.text
    [hit] = receiver.wait(1, EventType="onUserUpdated")
    assert hit.params["Source"] == "SDK" and hit.params["ClientIdentity"] == "dave"


def test_member_add_provisions_and_posts_by_the_header_rule(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded", "onMemberAdded", "onMemberRemoved", "onChannelAdded",
                 "onChannelUpdated", "onChannelDestroyed")
    quiet = make_channel(api, svc, FriendlyName="quiet")
    r = api.post(members_url(svc, quiet), {"Identity": "erin"})
    assert r.status_code == 201, r.text
    [user] = receiver.wait(1, EventType="onUserAdded")
    assert user.params["Identity"] == "erin" and user.params["Source"] == "API"
    loud = api.post(channels_url(svc), {"FriendlyName": "loud", "UniqueName": "loud"}, headers=ON).json()
    [channel] = receiver.wait(1, EventType="onChannelAdded")
    assert channel.params["ChannelSid"] == loud["sid"] and channel.params["UniqueName"] == "loud"
    assert channel.params["ChannelType"] == "public"
    member = api.post(members_url(svc, loud), {"Identity": "erin"}, headers=ON).json()
    [added] = receiver.wait(1, EventType="onMemberAdded")
    assert added.params["MemberSid"] == member["sid"] and added.params["Reason"] == "ADDED"
    assert added.params["ChannelSid"] == loud["sid"] and added.params["Identity"] == "erin"
    assert api.delete(f"{members_url(svc, loud)}/{member['sid']}", headers=ON).status_code == 204
    [removed] = receiver.wait(1, EventType="onMemberRemoved")
    assert removed.params["Reason"] == "REMOVED"
    assert api.post(f"{channels_url(svc)}/{loud['sid']}", {"FriendlyName": "louder"}, headers=ON).status_code == 200
    assert api.delete(f"{channels_url(svc)}/{loud['sid']}", headers=ON).status_code == 204
    receiver.wait(1, EventType="onChannelDestroyed")
    assert [h.params["EventType"] for h in receiver.hits] == [
        "onUserAdded", "onChannelAdded", "onMemberAdded", "onMemberRemoved", "onChannelUpdated",
        "onChannelDestroyed"]
    assert len({h.headers["i-twilio-idempotency-token"] for h in receiver.hits}) == 6


def test_client_join_is_reason_joined(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onMemberAdded")
    channel = make_channel(api, svc, FriendlyName="open")
    headers = token_for(api, svc, "fay")
    r = api.client.post(members_url(svc, channel), data={"Identity": "fay"}, headers=headers)
    assert r.status_code == 201, r.text
    [hit] = receiver.wait(1, EventType="onMemberAdded")
    assert hit.params["Reason"] == "JOINED" and hit.params["Source"] == "SDK" and hit.params["ClientIdentity"] == "fay"


def test_nothing_is_written_without_url_or_filter(api: Api, receiver: Receiver) -> None:
    unfiltered = hooked(api, receiver, "onChannelAdded")
    assert api.post(f"/v2/Services/{unfiltered['sid']}/Tokens", {"Identity": "gus"}).status_code == 201
    plain = api.new_service()
    assert api.post(f"/v2/Services/{plain['sid']}/Tokens", {"Identity": "gus"}).status_code == 201
    assert outbox_rows(api, unfiltered["sid"]) == [] and outbox_rows(api, plain["sid"]) == []
    time.sleep(0.5)
    assert receiver.hits == []


def test_get_method_puts_parameters_in_the_query(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded", WebhookMethod="GET")
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "hal"}).status_code == 201
    [hit] = receiver.wait(1, EventType="onUserAdded")
    assert hit.method == "GET" and hit.params["Identity"] == "hal" and "?" in hit.url
    assert signed(api, hit)


def test_retries_keep_one_idempotency_token_and_count_up(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded", PostWebhookRetryCount="3")
    receiver.statuses = [500, 429, 503]
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "ivy"}).status_code == 201
    hits = receiver.wait(4, timeout=30, EventType="onUserAdded")
    assert [h.params["RetryCount"] for h in hits] == ["0", "1", "2", "3"]
    assert len({h.headers["i-twilio-idempotency-token"] for h in hits}) == 1
    assert all(signed(api, h) for h in hits)
    deadline = time.monotonic() + 10
    while outbox_rows(api, svc["sid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert outbox_rows(api, svc["sid"]) == []  # delivered: gone


def test_given_up_is_kept_failed_and_not_retried_past_the_count(api: Api, receiver: Receiver) -> None:
    # its log line (50057, no PII) is checked on a real server's stderr: test_served.py
    svc = hooked(api, receiver, "onUserAdded", PostWebhookRetryCount="1")
    receiver.statuses = [500, 500]
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "jay"}).status_code == 201
    receiver.wait(2, timeout=20, EventType="onUserAdded")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = outbox_rows(api, svc["sid"])
        if rows and rows[0].status == "failed":
            break
        time.sleep(0.1)
    assert [r.status for r in rows] == ["failed"]
    time.sleep(0.5)
    assert len(receiver.hits) == 2  # not retried past the retry count


def test_a_row_given_up_on_goes_out_again_with_its_token_after_tokensvc_webhooks_retry(api: Api,
                                                                                      receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded")  # no retries: the first 500 gives up
    receiver.statuses = [500]
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "lee"}).status_code == 201
    [first] = receiver.wait(1, timeout=20, EventType="onUserAdded")
    deadline = time.monotonic() + 10
    while [r.status for r in outbox_rows(api, svc["sid"])] != ["failed"] and time.monotonic() < deadline:
        time.sleep(0.1)
    [row] = outbox_rows(api, svc["sid"])
    assert row.status == "failed"
    s = api.app.state.ctx.settings
    done = run_cli("webhooks", "retry", "--service", svc["sid"], "--json",
                   env={"TOKENSVC_DATABASE_URL": s.database_url, "TOKENSVC_KEYS_DIR": str(s.keys_dir)})
    assert done.returncode == 0 and json.loads(done.stdout) == {"retried": 1}, done.stderr
    # nothing to wake the server: its delivery process finds the row due by itself
    hits = receiver.wait(2, timeout=20, EventType="onUserAdded")
    assert hits[1].params["Identity"] == "lee" and signed(api, hits[1])
    assert hits[1].headers["i-twilio-idempotency-token"] == first.headers["i-twilio-idempotency-token"]
    deadline = time.monotonic() + 10
    while outbox_rows(api, svc["sid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert outbox_rows(api, svc["sid"]) == []  # delivered this time: gone


def test_a_refusal_is_not_retried(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded", PostWebhookRetryCount="3")
    receiver.statuses = [400]
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "kim"}).status_code == 201
    receiver.wait(1, EventType="onUserAdded")
    time.sleep(1.0)
    assert len(receiver.hits) == 1


def test_a_slow_receiver_does_not_slow_the_response(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded")
    receiver.delay = 3.0
    started = time.monotonic()
    for n in range(5):
        assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": f"slow{n}"}).status_code == 201
    assert time.monotonic() - started < 2.5
    assert len(receiver.wait(5, timeout=20, EventType="onUserAdded")) == 5


def test_deleting_a_user_drops_its_given_up_rows(api: Api, receiver: Receiver) -> None:
    svc = hooked(api, receiver, "onUserAdded")
    receiver.statuses = [500]
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "pii-lee"}).status_code == 201
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [r.status for r in outbox_rows(api, svc["sid"])] != ["failed"]:
        time.sleep(0.1)
    assert [r.status for r in outbox_rows(api, svc["sid"])] == ["failed"]
    assert api.delete(f"/v2/Services/{svc['sid']}/Users/pii-lee").status_code == 204
    assert outbox_rows(api, svc["sid"]) == []  # no copy of the deleted identity is kept


def test_a_delivery_outlasting_its_lease_is_not_claimed_again(settings: Settings, receiver: Receiver) -> None:
    app = create_app(dataclasses.replace(settings, webhook_lease=1))
    made = app.state.ctx.db.call(lambda conn: create_account(conn, box=app.state.ctx.box))
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, made.sid, made.auth_token, app)
        svc = hooked(api, receiver, "onUserAdded")
        receiver.delay = 2.5  # the attempt (5 s allowed) lasts two and a half leases
        assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "long"}).status_code == 201
        receiver.wait(1, EventType="onUserAdded")
        time.sleep(3.0)
        assert len(receiver.hits) == 1  # its claim was renewed while it lasted
        deadline = time.monotonic() + 5
        while outbox_rows(api, svc["sid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert outbox_rows(api, svc["sid"]) == []
