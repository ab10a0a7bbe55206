"""Pre-event onUserAdd (SPEC §10): the provisioning policy, asked before any first encounter
writes; a rejection (403 50056) or no answer (504 50076) leaves nothing behind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from channel_helpers import make_channel, members_url
from conftest import Api, assert_error, start_server
from tokensvc.store.outbox import API
from tokensvc.store.outbox_tables import outbox
from tokensvc.store.services import get_service
from tokensvc.tokens import mint
from tokensvc.webhooks.pre import ANSWER_SECONDS
from webhook_receiver import Receiver, serve


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


def policed(api: Api, receiver: Receiver, **extra: str) -> dict[str, Any]:
    svc = api.new_service()
    r = api.post(f"/v2/Services/{svc['sid']}", {"PreWebhookUrl": receiver.url, "PostWebhookUrl": receiver.url + "/post",
                                                  "WebhookFilters": ["onUserAdd", "onUserAdded"], **extra})
    assert r.status_code == 200, r.text
    return r.json()


def no_trace(api: Api, svc: dict[str, Any], identity: str) -> None:
    assert api.get(f"/v2/Services/{svc['sid']}/Users/{identity}").status_code == 404
    rows = api.app.state.ctx.db.call(lambda conn: conn.execute(
        select(outbox).where(outbox.c.service_sid == svc["sid"])).all())
    assert rows == []


def minted(api: Api, svc: dict[str, Any], identity: str) -> dict[str, str]:
    c = api.app.state.ctx
    made = mint(c.keyring.current(), issuer=c.settings.issuer, account_sid=api.account_sid,
                service_sid=svc["sid"], identity=identity, ttl=600)
    return {"X-Twilio-Token": made.token}


def test_token_endpoint_asks_once_with_signed_parameters(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "ann"}).status_code == 201
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "ann"}).status_code == 201
    [hit] = receiver.matching(EventType="onUserAdd")
    assert hit.params["Identity"] == "ann" and hit.params["Source"] == "API"
    assert hit.params["RoleSid"] == svc["default_service_role_sid"] and hit.params["RetryCount"] == "0"
    assert RequestValidator(api.auth_token).validate(hit.url, hit.params, hit.headers["x-twilio-signature"])
    receiver.wait(1, EventType="onUserAdded")


def test_token_endpoint_rejection_writes_nothing(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    receiver.statuses = [403]
    assert_error(api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "bad"}), 403, 50056)
    no_trace(api, svc, "bad")


def test_hook_sets_the_new_users_fields(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    admin = next(r for r in api.get(f"/v2/Services/{svc['sid']}/Roles").json()["roles"]
                 if r["friendly_name"] == "service admin")
    receiver.body = json.dumps({"FriendlyName": "Set by hook", "Attributes": {"tier": 2},
                                "RoleSid": admin["sid"]}).encode()
    r = api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "mod"})
    assert r.status_code == 201, r.text
    user = api.get(f"/v2/Services/{svc['sid']}/Users/mod").json()
    assert user["friendly_name"] == "Set by hook" and json.loads(user["attributes"]) == {"tier": 2}
    assert user["role_sid"] == admin["sid"]
    # its onUserAdded, committed with it, carries what the hook set
    [added] = receiver.wait(1, EventType="onUserAdded")
    assert added.params["UserSid"] == user["sid"] and added.params["FriendlyName"] == "Set by hook"
    assert added.params["RoleSid"] == admin["sid"] and json.loads(added.params["Attributes"]) == {"tier": 2}


def test_hook_fields_are_validated_as_the_callers(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    receiver.body = json.dumps({"FriendlyName": "x" * 300}).encode()
    assert_error(api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "long"}), 400, 50003)
    receiver.body = json.dumps({"RoleSid": "RL" + "0" * 32}).encode()
    assert_error(api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "role"}), 400, 50102)
    no_trace(api, svc, "long")
    no_trace(api, svc, "role")


def test_no_answer_in_5_s_is_504_50076(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    receiver.delay = 6.0
    assert_error(api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "late"}), 504, 50076)
    receiver.delay = 0.0
    no_trace(api, svc, "late")


def test_retries_then_proceeds(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver, PreWebhookRetryCount="2")
    receiver.statuses = [503, 500]
    assert api.post(f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "again"}).status_code == 201
    assert [h.params["RetryCount"] for h in receiver.matching(EventType="onUserAdd")] == ["0", "1", "2"]


def test_presented_token_rejection_writes_nothing(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    receiver.statuses = [403]
    r = api.client.get(f"/v2/Services/{svc['sid']}/Users", headers=minted(api, svc, "tok"))
    assert_error(r, 403, 50056)
    [hit] = receiver.matching(EventType="onUserAdd")
    assert hit.params["Source"] == "SDK" and hit.params["ClientIdentity"] == "tok"
    no_trace(api, svc, "tok")


def test_presented_token_modified(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    receiver.body = b'{"FriendlyName": "from hook"}'
    r = api.client.get(f"/v2/Services/{svc['sid']}/Users/tokmod", headers=minted(api, svc, "tokmod"))
    assert r.status_code == 200 and r.json()["friendly_name"] == "from hook"


def test_member_add_rejection_writes_nothing(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    channel = make_channel(api, svc, FriendlyName="c")
    receiver.statuses = [403]
    assert_error(api.post(members_url(svc, channel), {"Identity": "mem"}), 403, 50056)
    no_trace(api, svc, "mem")
    assert api.get(members_url(svc, channel)).json()["members"] == []
    receiver.body = b'{"FriendlyName": "member by hook"}'
    assert api.post(members_url(svc, channel), {"Identity": "mem"}).status_code == 201
    assert api.get(f"/v2/Services/{svc['sid']}/Users/mem").json()["friendly_name"] == "member by hook"


def test_user_create_asks_and_may_be_refused(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    receiver.statuses = [403]
    assert_error(api.post(f"/v2/Services/{svc['sid']}/Users", {"Identity": "made"}), 403, 50056)
    no_trace(api, svc, "made")


def test_concurrent_first_encounters_ask_once(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        for receiver in serve():
            receiver.delay = 0.5
            base = srv.base
            svc = httpx.post(f"{base}/v2/Services", data={"FriendlyName": "p"}, auth=srv.auth).json()
            httpx.post(f"{base}/v2/Services/{svc['sid']}", auth=srv.auth,
                       data={"PreWebhookUrl": receiver.url, "WebhookFilters": "onUserAdd"})
            tokens = f"/v2/Services/{svc['sid']}/Tokens"
            with httpx.Client(base_url=base, auth=srv.auth, timeout=20) as client, ThreadPoolExecutor(8) as pool:
                made = list(pool.map(lambda url: client.post(url, data={"Identity": "same"}), [tokens] * 8))
            assert [r.status_code for r in made] == [201] * 8
            assert len({r.json()["user_sid"] for r in made}) == 1
            assert len(receiver.matching(EventType="onUserAdd")) == 1
    finally:
        srv.stop()


def chat_policed(api: Api, receiver: Receiver, *filters: str) -> dict[str, Any]:
    svc = api.new_service()
    r = api.post(f"/v2/Services/{svc['sid']}", {"PreWebhookUrl": receiver.url, "WebhookFilters": list(filters)})
    assert r.status_code == 200, r.text
    return r.json()


def test_client_channel_add_is_asked_and_may_be_refused_or_modified(api: Api, receiver: Receiver) -> None:
    svc = chat_policed(api, receiver, "onChannelAdd")
    headers = minted(api, svc, "chan")
    channels = f"/v2/Services/{svc['sid']}/Channels"
    receiver.statuses = [403]
    assert_error(api.client.post(channels, data={"FriendlyName": "no"}, headers=headers), 403, 50056)
    assert api.get(channels).json()["channels"] == []
    receiver.body = b'{"FriendlyName": "renamed by hook", "UniqueName": "hooked"}'
    made = api.client.post(channels, data={"FriendlyName": "mine"}, headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["friendly_name"] == "renamed by hook" and made.json()["unique_name"] == "hooked"
    asked = receiver.matching(EventType="onChannelAdd")
    assert len(asked) == 2 and asked[1].params["FriendlyName"] == "mine" and asked[1].params["ClientIdentity"] == "chan"
    # REST (Basic) actions never ask the Chat pre-events
    assert api.post(channels, {"FriendlyName": "by rest"}).status_code == 201
    assert len(receiver.matching(EventType="onChannelAdd")) == 2


def test_client_member_add_and_user_update_are_asked(api: Api, receiver: Receiver) -> None:
    svc = chat_policed(api, receiver, "onMemberAdd", "onUserUpdate")
    channel = make_channel(api, svc, FriendlyName="open")
    headers = minted(api, svc, "joiner")
    receiver.statuses = [403]
    assert_error(api.client.post(members_url(svc, channel), data={"Identity": "joiner"}, headers=headers), 403, 50056)
    assert api.get(members_url(svc, channel)).json()["members"] == []
    receiver.body = b'{"FriendlyName": "hooked name"}'
    r = api.client.post(f"/v2/Services/{svc['sid']}/Users/joiner", data={"FriendlyName": "mine"}, headers=headers)
    assert r.status_code == 200 and r.json()["friendly_name"] == "hooked name"


def test_client_leaving_by_its_user_channel_asks_on_member_remove(api: Api, receiver: Receiver) -> None:
    svc = chat_policed(api, receiver, "onMemberRemove")
    channel = make_channel(api, svc, FriendlyName="left by user channel")
    assert api.post(members_url(svc, channel), {"Identity": "leaver"}).status_code == 201
    headers = minted(api, svc, "leaver")
    mine = f"/v2/Services/{svc['sid']}/Users/leaver/Channels/{channel['sid']}"
    receiver.statuses = [403]
    assert_error(api.client.delete(mine, headers=headers), 403, 50056)
    assert [m["identity"] for m in api.get(members_url(svc, channel)).json()["members"]] == ["leaver"]
    [asked] = receiver.matching(EventType="onMemberRemove")
    assert asked.params["ChannelSid"] == channel["sid"] and asked.params["ClientIdentity"] == "leaver"
    assert asked.params["MemberSid"].startswith("MB")
    assert api.client.delete(mine, headers=headers).status_code == 204
    assert api.get(members_url(svc, channel)).json()["members"] == []
    assert len(receiver.matching(EventType="onMemberRemove")) == 2


def test_an_answer_is_reused_until_the_user_it_allowed_is_written(api: Api, receiver: Receiver) -> None:
    svc = policed(api, receiver)
    hooks = api.app.state.ctx.pre_events
    service = api.app.state.ctx.db.call(lambda conn: get_service(conn, account_sid=api.account_sid, sid=svc["sid"]))
    # Two first encounters of one identity, the second after the first's answer (before its
    # write would commit): one question.
    assert api.client.portal.call(hooks.user_add, service, "gap", API) == {}
    assert api.client.portal.call(hooks.user_add, service, "gap", API) == {}
    assert len(receiver.matching(EventType="onUserAdd")) == 1
    time.sleep(ANSWER_SECONDS + 0.1)
    api.client.portal.call(hooks.user_add, service, "gap", API)
    assert len(receiver.matching(EventType="onUserAdd")) == 2
