"""Channels, Members, User Channels and Invites, from outside (SPEC §8, issue 12).

Raw HTTP and the official `twilio` package only; field names and list keys from Twilio's Chat v2
OpenAPI (`chat.v2.service.channel`, `.channel.member`, `.channel.invite`, `.user.user_channel`).
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException

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

CHANNEL_FIELDS = {"sid", "account_sid", "service_sid", "friendly_name", "unique_name", "attributes", "type",
                  "date_created", "date_updated", "created_by", "members_count", "messages_count", "url", "links"}
MEMBER_FIELDS = {"sid", "account_sid", "channel_sid", "service_sid", "identity", "date_created", "date_updated",
                 "role_sid", "last_consumed_message_index", "last_consumption_timestamp", "url", "attributes"}
INVITE_FIELDS = {"sid", "account_sid", "channel_sid", "service_sid", "identity", "date_created", "date_updated",
                 "role_sid", "created_by", "url"}
USER_CHANNEL_FIELDS = {"account_sid", "service_sid", "channel_sid", "user_sid", "member_sid", "status",
                       "last_consumed_message_index", "unread_messages_count", "links", "url", "notification_level"}


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    return bb.new_service("channels")


def ch_url(svc_sid: str, ref: str = "") -> str:
    return f"/v2/Services/{svc_sid}/Channels" + (f"/{ref}" if ref else "")


def new_channel(bb: BB, svc_sid: str, client: httpx.Client | None = None, **data: str) -> dict[str, Any]:
    r = (client or bb.http).post(ch_url(svc_sid), data=data)
    assert r.status_code == 201, r.text
    return r.json()


def add_member(bb: BB, svc_sid: str, ch: str, identity: str, client: httpx.Client | None = None,
               **data: str) -> dict[str, Any]:
    r = (client or bb.http).post(f"{ch_url(svc_sid, ch)}/Members", data={"Identity": identity, **data})
    assert r.status_code == 201, r.text
    return r.json()


def get_user(bb: BB, svc_sid: str, ref: str) -> dict[str, Any]:
    r = bb.http.get(f"/v2/Services/{svc_sid}/Users/{quote(ref, safe='')}")
    assert r.status_code == 200, r.text
    return r.json()


def get_channel(bb: BB, svc_sid: str, ref: str) -> dict[str, Any]:
    r = bb.http.get(ch_url(svc_sid, ref))
    assert r.status_code == 200, r.text
    return r.json()


def token_client(bb: BB, svc_sid: str, identity: str) -> httpx.Client:
    return bb.client(headers={"X-Twilio-Token": bb.token(svc_sid, identity)["token"]})


def set_limits(bb: BB, svc_sid: str, **limits: str) -> None:
    r = bb.http.post(f"/v2/Services/{svc_sid}", data=limits)
    assert r.status_code == 200, r.text


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- channel fields -------------------------------------------------------------------------


def test_channel_create_has_exactly_the_reference_fields(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    assert set(c) == CHANNEL_FIELDS
    assert sid_re("CH").match(c["sid"])
    assert c["account_sid"] == bb.account_sid and c["service_sid"] == svc["sid"]
    assert c["friendly_name"] is None and c["unique_name"] is None
    assert c["attributes"] == "{}"
    assert c["type"] == "public"
    assert c["created_by"] == "system"
    assert c["members_count"] == 0 and c["messages_count"] == 0
    assert isinstance(c["members_count"], int) and isinstance(c["messages_count"], int)
    assert ISO_Z.match(c["date_created"]) and ISO_Z.match(c["date_updated"])
    url = f"{bb.base}/v2/Services/{svc['sid']}/Channels/{c['sid']}"
    assert c["url"] == url
    assert c["links"] == {"members": f"{url}/Members", "messages": f"{url}/Messages", "invites": f"{url}/Invites",
                          "webhooks": f"{url}/Webhooks", "last_message": None}
    assert get_channel(bb, svc["sid"], c["sid"]) == c


def test_channel_create_with_every_parameter(bb: BB, svc: dict[str, Any]) -> None:
    un = uid("every")
    c = new_channel(bb, svc["sid"], FriendlyName="Every", UniqueName=un, Attributes='{"a": [1]}', Type="private",
                    DateCreated="2015-12-16T22:18:37Z", DateUpdated="2015-12-17T22:18:38Z", CreatedBy="carol")
    assert c["friendly_name"] == "Every" and c["unique_name"] == un
    assert isinstance(c["attributes"], str) and json.loads(c["attributes"]) == {"a": [1]}
    assert c["type"] == "private" and c["created_by"] == "carol"
    assert c["date_created"] == "2015-12-16T22:18:37Z" and c["date_updated"] == "2015-12-17T22:18:38Z"


def test_channels_through_twilio_package(bb: BB) -> None:
    svc = bb.new_service("chan-pkg")
    service = bb.twilio().chat.v2.services(svc["sid"])
    un = uid("pkg")
    ch = service.channels.create(friendly_name="Pkg", unique_name=un, type="public", attributes='{"x": 1}')
    assert ch.sid.startswith("CH") and ch.unique_name == un and ch.type == "public"
    assert ch.date_created.tzinfo is not None
    assert service.channels(un).fetch().sid == ch.sid
    identity = uid("pkg-member")
    member = service.channels(ch.sid).members.create(identity=identity)
    assert member.identity == identity and member.channel_sid == ch.sid
    user = service.users(identity).fetch()
    assert user.role_sid == svc["default_service_role_sid"]
    assert user.joined_channels_count == 1
    assert service.channels(ch.sid).members(identity).fetch().sid == member.sid
    assert service.channels(un).members(member.sid).fetch().identity == identity
    ucs = service.users(user.sid).user_channels.list()
    assert [(u.channel_sid, u.status, u.member_sid) for u in ucs] == [(ch.sid, "joined", member.sid)]
    other = service.users.create(identity=uid("pkg-invitee"))
    inv = service.channels(ch.sid).invites.create(identity=other.identity)
    assert inv.sid.startswith("IN") and inv.identity == other.identity
    assert [i.sid for i in service.channels(ch.sid).invites.list()] == [inv.sid]
    updated = service.channels(ch.sid).update(friendly_name="Renamed")
    assert updated.friendly_name == "Renamed"
    assert [c.sid for c in service.channels.list()] == [ch.sid]
    assert service.channels(ch.sid).fetch().members_count == 1
    assert service.channels(ch.sid).delete() is True
    assert service.users(user.sid).fetch().joined_channels_count == 0


@pytest.mark.parametrize("call, code", [
    (lambda s: s.channels.create(friendly_name="f" * 257), 50003),
    (lambda s: s.channels.create(unique_name="u" * 257), 50004),
    (lambda s: s.channels.create(unique_name="CH" + "a" * 32), 50306),
    (lambda s: s.channels.create(attributes="{nope"), 50304),
    (lambda s: s.channels.create(date_created="not-a-date"), 50308),
    (lambda s: s.channels("nope-" + uuid.uuid4().hex).fetch(), 20404),
    (lambda s: s.channels.create(unique_name="dup-pkg").sid and s.channels.create(unique_name="dup-pkg"), 50307),
])
def test_channel_errors_through_twilio_package(bb: BB, call: Any, code: int) -> None:
    service = bb.twilio().chat.v2.services(bb.new_service("chan-pkg-err")["sid"])
    with pytest.raises(TwilioRestException) as e:
        call(service)
    assert e.value.code == code


# --- channel validation ---------------------------------------------------------------------


def test_friendly_name_256_ok_257_is_50003(bb: BB, svc: dict[str, Any]) -> None:
    assert new_channel(bb, svc["sid"], FriendlyName="f" * 256)["friendly_name"] == "f" * 256
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"FriendlyName": "f" * 257}), 400, 50003)
    c = new_channel(bb, svc["sid"])
    assert_error(bb.http.post(ch_url(svc["sid"], c["sid"]), data={"FriendlyName": "f" * 257}), 400, 50003)


def test_unique_name_256_ok_257_is_50004(bb: BB, svc: dict[str, Any]) -> None:
    un = uuid.uuid4().hex + "u" * 224
    assert new_channel(bb, svc["sid"], UniqueName=un)["unique_name"] == un
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"UniqueName": "u" * 257}), 400, 50004)
    c = new_channel(bb, svc["sid"])
    assert_error(bb.http.post(ch_url(svc["sid"], c["sid"]), data={"UniqueName": "u" * 257}), 400, 50004)


@pytest.mark.parametrize("un", ["CH" + uuid.uuid4().hex, "CH" + "0123456789abcdef" * 2])
def test_unique_name_like_a_channel_sid_is_50306(bb: BB, svc: dict[str, Any], un: str) -> None:
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"UniqueName": un}), 400, 50306)
    c = new_channel(bb, svc["sid"])
    assert_error(bb.http.post(ch_url(svc["sid"], c["sid"]), data={"UniqueName": un}), 400, 50306)


def test_unique_name_taken_is_409_50307_on_create_and_update(bb: BB, svc: dict[str, Any]) -> None:
    un = uid("taken")
    new_channel(bb, svc["sid"], UniqueName=un)
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"UniqueName": un}), 409, 50307)
    other = new_channel(bb, svc["sid"])
    assert_error(bb.http.post(ch_url(svc["sid"], other["sid"]), data={"UniqueName": un}), 409, 50307)
    # Another service may use it.
    assert new_channel(bb, bb.new_service("other-un")["sid"], UniqueName=un)["unique_name"] == un


def test_unique_name_lost_race_is_409_50307(bb: BB) -> None:
    svc = bb.new_service("un-race")
    un = uid("race")

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as c:
            return c.post(ch_url(svc["sid"]), data={"UniqueName": un})

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(create, range(10)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 9, [r.text for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert_error(r, 409, 50307)
    assert len(bb.http.get(ch_url(svc["sid"])).json()["channels"]) == 1


@pytest.mark.parametrize("attributes", ["{", "nope", "{'a': 1}", "{}x"])
def test_attributes_not_json_is_50304(bb: BB, svc: dict[str, Any], attributes: str) -> None:
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"Attributes": attributes}), 400, 50304)


def test_attributes_16_kib_ok_and_longer_is_50303(bb: BB, svc: dict[str, Any]) -> None:
    exact = json.dumps({"k": "v" * (16 * 1024 - 9)})
    assert len(exact) == 16 * 1024
    assert json.loads(new_channel(bb, svc["sid"], Attributes=exact)["attributes"]) == json.loads(exact)
    over = json.dumps({"k": "v" * (16 * 1024 - 8)})
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"Attributes": over}), 400, 50303)


@pytest.mark.parametrize("kind", ["group", "PUBLIC", ""])
def test_type_other_than_public_or_private_is_20001(bb: BB, svc: dict[str, Any], kind: str) -> None:
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"Type": kind}), 400, 20001)


@pytest.mark.parametrize("value", ["yesterday", "2015-13-45T00:00:00Z", "12345", ""])
def test_bad_dates_are_50308_and_50309(bb: BB, svc: dict[str, Any], value: str) -> None:
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"DateCreated": value}), 400, 50308)
    assert_error(bb.http.post(ch_url(svc["sid"]), data={"DateUpdated": value}), 400, 50309)
    c = new_channel(bb, svc["sid"])
    assert_error(bb.http.post(ch_url(svc["sid"], c["sid"]), data={"DateCreated": value}), 400, 50308)
    assert_error(bb.http.post(ch_url(svc["sid"], c["sid"]), data={"DateUpdated": value}), 400, 50309)


def test_update_without_parameters_is_50347(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    assert_error(bb.http.post(ch_url(svc["sid"], c["sid"]), data={}), 400, 50347)
    assert get_channel(bb, svc["sid"], c["sid"]) == c


def test_update_every_field_and_by_unique_name(bb: BB, svc: dict[str, Any]) -> None:
    un = uid("upd")
    c = new_channel(bb, svc["sid"], UniqueName=un)
    r = bb.http.post(ch_url(svc["sid"], un), data={
        "FriendlyName": "New", "Attributes": '{"b": 2}', "DateCreated": "2016-01-01T00:00:00Z",
        "DateUpdated": "2016-01-02T00:00:00Z", "CreatedBy": "dave"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == CHANNEL_FIELDS and body["sid"] == c["sid"]
    assert body["friendly_name"] == "New" and json.loads(body["attributes"]) == {"b": 2}
    assert body["created_by"] == "dave"
    assert body["date_created"] == "2016-01-01T00:00:00Z" and body["date_updated"] == "2016-01-02T00:00:00Z"
    un2 = uid("renamed")
    assert bb.http.post(ch_url(svc["sid"], un), data={"UniqueName": un2}).json()["unique_name"] == un2
    assert_error(bb.http.get(ch_url(svc["sid"], un)), 404, 20404)
    assert get_channel(bb, svc["sid"], un2)["sid"] == c["sid"]


def test_unique_name_with_slash_is_addressable_with_percent_2f(bb: BB, svc: dict[str, Any]) -> None:
    un = f"team/{uuid.uuid4().hex[:8]}"
    c = new_channel(bb, svc["sid"], UniqueName=un)
    enc = quote(un, safe="")
    assert "%2F" in enc
    assert get_channel(bb, svc["sid"], enc)["sid"] == c["sid"]
    assert bb.http.post(ch_url(svc["sid"], enc), data={"FriendlyName": "s"}).json()["friendly_name"] == "s"
    assert bb.http.get(f"{ch_url(svc['sid'], enc)}/Members").status_code == 200
    assert bb.http.post(f"{ch_url(svc['sid'], enc)}/Members", data={"Identity": uid()}).status_code == 201
    assert bb.http.delete(ch_url(svc["sid"], enc)).status_code == 204
    assert_error(bb.http.get(ch_url(svc["sid"], c["sid"])), 404, 20404)


def test_unknown_channel_and_other_service_channel_are_404(bb: BB, svc: dict[str, Any]) -> None:
    assert_error(bb.http.get(ch_url(svc["sid"], "CH" + uuid.uuid4().hex)), 404, 20404)
    assert_error(bb.http.get(ch_url(svc["sid"], uid("nothing"))), 404, 20404)
    other = new_channel(bb, bb.new_service("foreign-ch")["sid"], UniqueName=uid("foreign"))
    for ref in (other["sid"], other["unique_name"]):
        assert_error(bb.http.get(ch_url(svc["sid"], ref)), 404, 20404)
        assert_error(bb.http.post(ch_url(svc["sid"], ref), data={"FriendlyName": "x"}), 404, 20404)
        assert_error(bb.http.delete(ch_url(svc["sid"], ref)), 404, 20404)
        assert_error(bb.http.get(f"{ch_url(svc['sid'], ref)}/Members"), 404, 20404)


@pytest.mark.parametrize("sub", ["Messages", "Webhooks", "Messages/IM" + "0" * 32, "Webhooks/WH" + "0" * 32])
def test_messages_and_webhooks_are_404(bb: BB, svc: dict[str, Any], sub: str) -> None:
    c = new_channel(bb, svc["sid"])
    assert_error(bb.http.get(f"{ch_url(svc['sid'], c['sid'])}/{sub}"), 404, 20404)
    assert_error(bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/{sub}", data={"Body": "hi"}), 404, 20404)


# --- channel lists --------------------------------------------------------------------------


def test_list_type_filter_defaults_to_public_and_repeats(bb: BB) -> None:
    svc = bb.new_service("chan-list")
    pub = [new_channel(bb, svc["sid"], Type="public") for _ in range(3)]
    priv = [new_channel(bb, svc["sid"], Type="private") for _ in range(2)]
    r = bb.http.get(ch_url(svc["sid"]))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"channels", "meta"} and set(body["meta"]) == META_KEYS
    assert body["meta"]["key"] == "channels"
    assert [c["sid"] for c in body["channels"]] == [c["sid"] for c in pub]
    for c in body["channels"]:
        assert set(c) == CHANNEL_FIELDS
    only_priv = bb.http.get(ch_url(svc["sid"]), params={"Type": "private"}).json()["channels"]
    assert [c["sid"] for c in only_priv] == [c["sid"] for c in priv]
    both = bb.http.get(ch_url(svc["sid"]), params=[("Type", "public"), ("Type", "private")]).json()["channels"]
    assert {c["sid"] for c in both} == {c["sid"] for c in pub + priv}
    # Paging keeps the filter.
    page = bb.http.get(ch_url(svc["sid"]), params=[("Type", "private"), ("PageSize", "1")]).json()
    assert page["meta"]["page_size"] == 1 and page["meta"]["next_page_url"]
    for key in ("next_page_url", "url", "first_page_url"):
        assert query_of(page["meta"][key]).get("Type") == ["private"], page["meta"][key]
    nxt = bb.http.get(page["meta"]["next_page_url"]).json()
    assert [c["sid"] for c in nxt["channels"]] == [priv[1]["sid"]]
    assert nxt["meta"]["next_page_url"] is None
    assert query_of(nxt["meta"]["previous_page_url"]).get("Type") == ["private"]
    two = bb.http.get(ch_url(svc["sid"]), params=[("Type", "public"), ("Type", "private"), ("PageSize", "2")])
    assert sorted(query_of(two.json()["meta"]["next_page_url"])["Type"]) == ["private", "public"]
    pkg = bb.twilio().chat.v2.services(svc["sid"]).channels
    assert [c.sid for c in pkg.list(type=["private"])] == [c["sid"] for c in priv]
    assert [c.sid for c in pkg.list(page_size=1)] == [c["sid"] for c in pub]


def test_list_bad_type_filter_is_400_not_500(bb: BB, svc: dict[str, Any]) -> None:
    assert_error(bb.http.get(ch_url(svc["sid"]), params={"Type": "bogus"}), 400)


# --- members --------------------------------------------------------------------------------


def test_member_add_provisions_a_user_with_the_default_service_role(bb: BB) -> None:
    svc = bb.new_service("provision")
    c = new_channel(bb, svc["sid"])
    identity = uid("fresh")
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}"), 404, 20404)
    m = add_member(bb, svc["sid"], c["sid"], identity)
    assert set(m) == MEMBER_FIELDS
    assert sid_re("MB").match(m["sid"])
    assert m["identity"] == identity and m["channel_sid"] == c["sid"] and m["service_sid"] == svc["sid"]
    assert m["account_sid"] == bb.account_sid
    assert m["role_sid"] == svc["default_channel_role_sid"]
    assert m["attributes"] == "{}"
    assert m["last_consumed_message_index"] is None and m["last_consumption_timestamp"] is None
    assert ISO_Z.match(m["date_created"]) and ISO_Z.match(m["date_updated"])
    assert m["url"] == f"{bb.base}/v2/Services/{svc['sid']}/Channels/{c['sid']}/Members/{m['sid']}"
    u = get_user(bb, svc["sid"], identity)
    assert u["role_sid"] == svc["default_service_role_sid"] and u["joined_channels_count"] == 1
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 1


def test_member_add_with_every_parameter(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    admin = bb.roles(svc["sid"])["channel admin"]["sid"]
    m = add_member(bb, svc["sid"], c["sid"], uid("every"), RoleSid=admin, Attributes='{"m": 1}',
                   LastConsumedMessageIndex="3", LastConsumptionTimestamp="2016-03-24T21:05:19Z",
                   DateCreated="2016-03-24T20:00:00Z", DateUpdated="2016-03-24T21:00:00Z")
    assert m["role_sid"] == admin and json.loads(m["attributes"]) == {"m": 1}
    assert m["last_consumed_message_index"] == 3
    assert m["last_consumption_timestamp"] == "2016-03-24T21:05:19Z"
    assert m["date_created"] == "2016-03-24T20:00:00Z" and m["date_updated"] == "2016-03-24T21:00:00Z"


def test_member_add_for_an_existing_user_keeps_it(bb: BB, svc: dict[str, Any]) -> None:
    admin = bb.roles(svc["sid"])["service admin"]["sid"]
    u = bb.new_user(svc["sid"], uid("exists"), RoleSid=admin, FriendlyName="Kept")
    c = new_channel(bb, svc["sid"])
    add_member(bb, svc["sid"], c["sid"], u["identity"])
    after = get_user(bb, svc["sid"], u["sid"])
    assert after["sid"] == u["sid"] and after["role_sid"] == admin and after["friendly_name"] == "Kept"
    assert after["joined_channels_count"] == 1


def test_member_role_sid_must_be_a_channel_role_of_this_service_50101(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    bad = [bb.roles(svc["sid"])["service user"]["sid"], "RL" + uuid.uuid4().hex, "RL123", "garbage",
           bb.roles(bb.new_service("foreign-role")["sid"])["channel user"]["sid"]]
    for role in bad:
        identity = uid("badrole")
        r = bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Members", data={"Identity": identity, "RoleSid": role})
        assert_error(r, 400, 50101)
        assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}"), 404, 20404)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 0


def test_member_identity_rules(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    url = f"{ch_url(svc['sid'], c['sid'])}/Members"
    body = assert_error(bb.http.post(url, data={}), 400, 20001)
    assert body["message"] == "Missing required parameter Identity in the post body"
    assert_error(bb.http.post(url, data={"Identity": ""}), 400, 20001)
    assert_error(bb.http.post(url, data={"Identity": "x" * 257}), 400, 50207)
    assert_error(bb.http.post(url, data={"Identity": "US" + uuid.uuid4().hex}), 400, 50206)


def test_already_a_member_is_409_50404(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    identity = uid("twice")
    add_member(bb, svc["sid"], c["sid"], identity)
    assert_error(bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Members", data={"Identity": identity}), 409, 50404)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 1
    assert get_user(bb, svc["sid"], identity)["joined_channels_count"] == 1


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", ""])
def test_bad_last_consumed_message_index_is_50406(bb: BB, svc: dict[str, Any], value: str) -> None:
    c = new_channel(bb, svc["sid"])
    identity = uid("lcmi")
    r = bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Members",
                     data={"Identity": identity, "LastConsumedMessageIndex": value})
    assert_error(r, 400, 50406)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}"), 404, 20404)
    m = add_member(bb, svc["sid"], c["sid"], uid("lcmi-upd"))
    assert_error(bb.http.post(m["url"], data={"LastConsumedMessageIndex": value}), 400, 50406)


@pytest.mark.parametrize("value", ["yesterday", "2016-02-30T00:00:00Z", ""])
def test_bad_last_consumption_timestamp_is_50405(bb: BB, svc: dict[str, Any], value: str) -> None:
    c = new_channel(bb, svc["sid"])
    r = bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Members",
                     data={"Identity": uid("lct"), "LastConsumptionTimestamp": value})
    assert_error(r, 400, 50405)
    m = add_member(bb, svc["sid"], c["sid"], uid("lct-upd"))
    assert_error(bb.http.post(m["url"], data={"LastConsumptionTimestamp": value}), 400, 50405)


def test_channel_full_is_50403_and_leaves_no_user(bb: BB) -> None:
    svc = bb.new_service("full")
    set_limits(bb, svc["sid"], **{"Limits.ChannelMembers": "2"})
    c = new_channel(bb, svc["sid"])
    add_member(bb, svc["sid"], c["sid"], uid("a"))
    add_member(bb, svc["sid"], c["sid"], uid("b"))
    identity = uid("third")
    assert_error(bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Members", data={"Identity": identity}), 400, 50403)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}"), 404, 20404)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 2


def test_user_at_user_channels_limit_is_50208_and_leaves_no_user(bb: BB) -> None:
    svc = bb.new_service("user-limit")
    set_limits(bb, svc["sid"], **{"Limits.UserChannels": "1"})
    c1, c2 = new_channel(bb, svc["sid"]), new_channel(bb, svc["sid"])
    identity = uid("busy")
    add_member(bb, svc["sid"], c1["sid"], identity)
    assert_error(bb.http.post(f"{ch_url(svc['sid'], c2['sid'])}/Members", data={"Identity": identity}), 400, 50208)
    assert get_user(bb, svc["sid"], identity)["joined_channels_count"] == 1
    assert get_channel(bb, svc["sid"], c2["sid"])["members_count"] == 0


def test_member_default_roles_invite_then_creator_then_channel_default(bb: BB) -> None:
    svc = bb.new_service("roles")
    roles = bb.roles(svc["sid"])
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles",
                     data={"FriendlyName": "invited role", "Type": "channel", "Permission": "sendMessage"})
    assert r.status_code == 201, r.text
    custom = r.json()["sid"]
    c = new_channel(bb, svc["sid"], CreatedBy="creator")
    assert add_member(bb, svc["sid"], c["sid"], "creator")["role_sid"] == svc["default_channel_creator_role_sid"]
    assert svc["default_channel_creator_role_sid"] == roles["channel admin"]["sid"]
    assert add_member(bb, svc["sid"], c["sid"], uid("plain"))["role_sid"] == svc["default_channel_role_sid"]
    invitee = bb.new_user(svc["sid"], uid("invitee"))
    inv = bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Invites",
                       data={"Identity": invitee["identity"], "RoleSid": custom})
    assert inv.status_code == 201, inv.text
    m = add_member(bb, svc["sid"], c["sid"], invitee["identity"])
    assert m["role_sid"] == custom
    # The invite is consumed.
    assert bb.http.get(f"{ch_url(svc['sid'], c['sid'])}/Invites").json()["invites"] == []
    assert_error(bb.http.get(f"{ch_url(svc['sid'], c['sid'])}/Invites/{inv.json()['sid']}"), 404, 20404)
    uc = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{invitee['sid']}/Channels/{c['sid']}").json()
    assert uc["status"] == "joined" and uc["member_sid"] == m["sid"]


def test_member_fetch_update_delete_by_sid_and_identity(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    identity = f"mem/{uuid.uuid4().hex[:8]}"
    m = add_member(bb, svc["sid"], c["sid"], identity)
    base = f"{ch_url(svc['sid'], c['sid'])}/Members"
    enc = quote(identity, safe="")
    for ref in (m["sid"], enc):
        r = bb.http.get(f"{base}/{ref}")
        assert r.status_code == 200, r.text
        assert r.json() == m
    admin = bb.roles(svc["sid"])["channel admin"]["sid"]
    r = bb.http.post(f"{base}/{enc}", data={"RoleSid": admin, "Attributes": '{"z": 1}',
                                             "LastConsumedMessageIndex": "0",
                                             "LastConsumptionTimestamp": "2017-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == MEMBER_FIELDS and body["sid"] == m["sid"]
    assert body["role_sid"] == admin and json.loads(body["attributes"]) == {"z": 1}
    assert body["last_consumed_message_index"] == 0
    assert body["last_consumption_timestamp"] == "2017-01-01T00:00:00Z"
    assert_error(bb.http.post(f"{base}/{m['sid']}", data={"RoleSid": bb.roles(svc["sid"])["service user"]["sid"]}),
                 400, 50101)
    assert_error(bb.http.post(f"{base}/{m['sid']}", data={"Attributes": "{"}), 400, 50304)
    assert bb.http.delete(f"{base}/{enc}").status_code == 204
    assert_error(bb.http.get(f"{base}/{m['sid']}"), 404, 20404)
    assert_error(bb.http.delete(f"{base}/{m['sid']}"), 404, 20404)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 0
    assert get_user(bb, svc["sid"], identity)["joined_channels_count"] == 0


def test_member_of_another_channel_is_404(bb: BB, svc: dict[str, Any]) -> None:
    c1, c2 = new_channel(bb, svc["sid"]), new_channel(bb, svc["sid"])
    m = add_member(bb, svc["sid"], c1["sid"], uid("elsewhere"))
    assert_error(bb.http.get(f"{ch_url(svc['sid'], c2['sid'])}/Members/{m['sid']}"), 404, 20404)
    assert_error(bb.http.get(f"{ch_url(svc['sid'], c2['sid'])}/Members/{m['identity']}"), 404, 20404)
    assert_error(bb.http.get(f"{ch_url(svc['sid'], c1['sid'])}/Members/MB{uuid.uuid4().hex}"), 404, 20404)


def test_member_list_identity_filter_repeats_and_paging_keeps_it(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    made = [add_member(bb, svc["sid"], c["sid"], uid(f"l{i}")) for i in range(4)]
    url = f"{ch_url(svc['sid'], c['sid'])}/Members"
    body = bb.http.get(url).json()
    assert set(body) == {"members", "meta"} and set(body["meta"]) == META_KEYS
    assert body["meta"]["key"] == "members"
    assert [m["sid"] for m in body["members"]] == [m["sid"] for m in made]
    assert all(set(m) == MEMBER_FIELDS for m in body["members"])
    want = [made[0]["identity"], made[2]["identity"], made[3]["identity"]]
    r = bb.http.get(url, params=[("Identity", i) for i in want] + [("PageSize", "2")]).json()
    assert [m["identity"] for m in r["members"]] == want[:2]
    assert sorted(query_of(r["meta"]["next_page_url"])["Identity"]) == sorted(want)
    nxt = bb.http.get(r["meta"]["next_page_url"]).json()
    assert [m["identity"] for m in nxt["members"]] == want[2:]
    pkg = bb.twilio().chat.v2.services(svc["sid"]).channels(c["sid"]).members
    assert [m.identity for m in pkg.list(identity=[made[1]["identity"]])] == [made[1]["identity"]]


# --- invites --------------------------------------------------------------------------------


def test_invite_fields_and_lifecycle(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    u = bb.new_user(svc["sid"], f"inv/{uuid.uuid4().hex[:8]}")
    url = f"{ch_url(svc['sid'], c['sid'])}/Invites"
    r = bb.http.post(url, data={"Identity": u["identity"]})
    assert r.status_code == 201, r.text
    inv = r.json()
    assert set(inv) == INVITE_FIELDS
    assert sid_re("IN").match(inv["sid"])
    assert inv["identity"] == u["identity"] and inv["channel_sid"] == c["sid"]
    assert inv["account_sid"] == bb.account_sid and inv["service_sid"] == svc["sid"]
    assert inv["role_sid"] == svc["default_channel_role_sid"]
    assert inv["created_by"] == "system"
    assert ISO_Z.match(inv["date_created"]) and ISO_Z.match(inv["date_updated"])
    assert inv["url"] == f"{bb.base}{url}/{inv['sid']}"
    assert bb.http.get(f"{url}/{inv['sid']}").json() == inv
    listed = bb.http.get(url).json()
    assert set(listed) == {"invites", "meta"} and listed["meta"]["key"] == "invites"
    assert listed["invites"] == [inv]
    assert bb.http.get(url, params={"Identity": "nobody"}).json()["invites"] == []
    assert bb.http.get(url, params={"Identity": u["identity"]}).json()["invites"] == [inv]
    assert get_user(bb, svc["sid"], u["sid"])["joined_channels_count"] == 0
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 0
    assert_error(bb.http.post(url, data={"Identity": u["identity"]}), 409, 50212)
    assert bb.http.delete(f"{url}/{inv['sid']}").status_code == 204
    assert_error(bb.http.get(f"{url}/{inv['sid']}"), 404, 20404)
    assert_error(bb.http.delete(f"{url}/{inv['sid']}"), 404, 20404)


def test_invite_never_provisions_20404(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    identity = uid("ghost")
    assert_error(bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Invites", data={"Identity": identity}), 404, 20404)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}"), 404, 20404)
    pkg = bb.twilio().chat.v2.services(svc["sid"]).channels(c["sid"]).invites
    with pytest.raises(TwilioRestException) as e:
        pkg.create(identity=identity)
    assert e.value.status == 404 and e.value.code == 20404


def test_invite_errors(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    url = f"{ch_url(svc['sid'], c['sid'])}/Invites"
    assert_error(bb.http.post(url, data={}), 400, 20001)
    member = add_member(bb, svc["sid"], c["sid"], uid("member"))
    assert_error(bb.http.post(url, data={"Identity": member["identity"]}), 409, 50404)
    u = bb.new_user(svc["sid"], uid("inv-role"))
    assert_error(bb.http.post(url, data={"Identity": u["identity"],
                                         "RoleSid": bb.roles(svc["sid"])["service admin"]["sid"]}), 400, 50101)
    assert bb.http.get(url).json()["invites"] == []


def test_invites_through_twilio_package(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    u = bb.new_user(svc["sid"], uid("pkg-inv"))
    invites = bb.twilio().chat.v2.services(svc["sid"]).channels(c["sid"]).invites
    inv = invites.create(identity=u["identity"])
    with pytest.raises(TwilioRestException) as e:
        invites.create(identity=u["identity"])
    assert e.value.code == 50212
    assert invites(inv.sid).fetch().identity == u["identity"]
    assert [i.sid for i in invites.list(identity=[u["identity"]])] == [inv.sid]
    assert invites(inv.sid).delete() is True


# --- user channels --------------------------------------------------------------------------


def test_user_channels_fields_fetch_update_and_leave(bb: BB) -> None:
    svc = bb.new_service("uc")
    c = new_channel(bb, svc["sid"])
    identity = uid("uc")
    m = add_member(bb, svc["sid"], c["sid"], identity)
    u = get_user(bb, svc["sid"], identity)
    base = f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels"
    listed = bb.http.get(base).json()
    assert set(listed) == {"channels", "meta"} and set(listed["meta"]) == META_KEYS
    assert listed["meta"]["key"] == "channels"
    [uc] = listed["channels"]
    assert set(uc) == USER_CHANNEL_FIELDS
    assert uc["account_sid"] == bb.account_sid and uc["service_sid"] == svc["sid"]
    assert uc["channel_sid"] == c["sid"] and uc["user_sid"] == u["sid"] and uc["member_sid"] == m["sid"]
    assert uc["status"] == "joined" and uc["notification_level"] == "default"
    assert uc["last_consumed_message_index"] is None and uc["unread_messages_count"] is None
    assert uc["url"] == f"{bb.base}{base}/{c['sid']}"
    assert uc["links"] == {"channel": c["url"], "member": m["url"]}
    for ref in (c["sid"],):
        assert bb.http.get(f"{base}/{ref}").json() == uc
    assert bb.http.get(f"/v2/Services/{svc['sid']}/Users/{quote(identity, safe='')}/Channels/{c['sid']}").json() == uc
    r = bb.http.post(f"{base}/{c['sid']}", data={"NotificationLevel": "muted", "LastConsumedMessageIndex": "4",
                                                  "LastConsumptionTimestamp": "2018-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    up = r.json()
    assert set(up) == USER_CHANNEL_FIELDS
    assert up["notification_level"] == "muted" and up["last_consumed_message_index"] == 4
    assert up["unread_messages_count"] == 0
    member = bb.http.get(m["url"]).json()
    assert member["last_consumed_message_index"] == 4
    assert member["last_consumption_timestamp"] == "2018-01-01T00:00:00Z"
    assert_error(bb.http.post(f"{base}/{c['sid']}", data={"NotificationLevel": "loud"}), 400, 50210)
    assert_error(bb.http.post(f"{base}/{c['sid']}", data={"LastConsumedMessageIndex": "-2"}), 400, 50406)
    assert_error(bb.http.post(f"{base}/{c['sid']}", data={"LastConsumptionTimestamp": "nope"}), 400, 50405)
    assert bb.http.delete(f"{base}/{c['sid']}").status_code == 204
    assert bb.http.get(base).json()["channels"] == []
    assert_error(bb.http.get(f"{base}/{c['sid']}"), 404, 20404)
    assert_error(bb.http.get(m["url"]), 404, 20404)
    assert get_user(bb, svc["sid"], u["sid"])["joined_channels_count"] == 0
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 0


def test_user_channel_by_unique_name_with_slash(bb: BB, svc: dict[str, Any]) -> None:
    un = f"uc/{uuid.uuid4().hex[:8]}"
    c = new_channel(bb, svc["sid"], UniqueName=un)
    identity = uid("uc-un")
    add_member(bb, svc["sid"], c["sid"], identity)
    r = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}/Channels/{quote(un, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json()["channel_sid"] == c["sid"]


def test_user_channel_of_an_invite_and_dropping_it(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"], Type="private")
    u = bb.new_user(svc["sid"], uid("invited"))
    inv = bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Invites", data={"Identity": u["identity"]}).json()
    base = f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels"
    [uc] = bb.http.get(base).json()["channels"]
    assert set(uc) == USER_CHANNEL_FIELDS
    assert uc["status"] == "invited" and uc["member_sid"] is None
    assert uc["links"]["channel"] == c["url"] and uc["links"].get("member") is None
    assert get_user(bb, svc["sid"], u["sid"])["joined_channels_count"] == 0
    assert bb.http.delete(f"{base}/{c['sid']}").status_code == 204
    assert_error(bb.http.get(f"{ch_url(svc['sid'], c['sid'])}/Invites/{inv['sid']}"), 404, 20404)
    assert bb.http.get(base).json()["channels"] == []


def test_user_channels_not_a_member_is_404(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    u = bb.new_user(svc["sid"], uid("outsider"))
    base = f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels/{c['sid']}"
    assert_error(bb.http.get(base), 404, 20404)
    assert_error(bb.http.post(base, data={"NotificationLevel": "muted"}), 404, 20404)
    assert_error(bb.http.delete(base), 404, 20404)


def test_user_channels_page_size_at_most_50(bb: BB) -> None:
    svc = bb.new_service("uc-page")
    identity = uid("many")
    chans = [new_channel(bb, svc["sid"]) for _ in range(53)]
    for c in chans:
        add_member(bb, svc["sid"], c["sid"], identity)
    base = f"/v2/Services/{svc['sid']}/Users/{identity}/Channels"
    for size in ("51", "100", "1000"):
        r = bb.http.get(base, params={"PageSize": size})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["meta"]["page_size"] == 50 and len(body["channels"]) == 50
    first = bb.http.get(base).json()
    assert first["meta"]["page_size"] == 50 and len(first["channels"]) == 50
    rest = bb.http.get(first["meta"]["next_page_url"]).json()
    assert [x["channel_sid"] for x in first["channels"] + rest["channels"]] == [c["sid"] for c in chans]
    assert get_user(bb, svc["sid"], identity)["joined_channels_count"] == 53
    user = bb.twilio().chat.v2.services(svc["sid"]).users(identity)
    assert len(user.user_channels.list()) == 53


# --- counts and cascades --------------------------------------------------------------------


def test_counts_exact_through_adds_removes_and_channel_delete(bb: BB) -> None:
    svc = bb.new_service("counts")
    chans = [new_channel(bb, svc["sid"]) for _ in range(3)]
    people = [uid(f"p{i}") for i in range(3)]
    for c in chans:
        for p in people:
            add_member(bb, svc["sid"], c["sid"], p)
    assert [get_channel(bb, svc["sid"], c["sid"])["members_count"] for c in chans] == [3, 3, 3]
    assert [get_user(bb, svc["sid"], p)["joined_channels_count"] for p in people] == [3, 3, 3]
    listed = bb.http.get(f"/v2/Services/{svc['sid']}/Users").json()["users"]
    assert [u["joined_channels_count"] for u in listed] == [3, 3, 3]
    assert bb.http.delete(f"{ch_url(svc['sid'], chans[0]['sid'])}/Members/{people[0]}").status_code == 204
    assert bb.http.delete(f"/v2/Services/{svc['sid']}/Users/{people[1]}/Channels/{chans[1]['sid']}").status_code == 204
    assert [get_user(bb, svc["sid"], p)["joined_channels_count"] for p in people] == [2, 2, 3]
    assert [get_channel(bb, svc["sid"], c["sid"])["members_count"] for c in chans] == [2, 2, 3]
    assert bb.http.delete(ch_url(svc["sid"], chans[2]["sid"])).status_code == 204
    assert [get_user(bb, svc["sid"], p)["joined_channels_count"] for p in people] == [1, 1, 2]
    listed = bb.http.get(f"/v2/Services/{svc['sid']}/Users").json()["users"]
    assert [u["joined_channels_count"] for u in listed] == [1, 1, 2]
    assert_error(bb.http.get(f"{ch_url(svc['sid'], chans[2]['sid'])}/Members"), 404, 20404)


def test_channel_delete_removes_invites(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    u = bb.new_user(svc["sid"], uid("inv-del"))
    bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Invites", data={"Identity": u["identity"]})
    assert bb.http.delete(ch_url(svc["sid"], c["sid"])).status_code == 204
    assert bb.http.get(f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels").json()["channels"] == []
    assert_error(bb.http.delete(ch_url(svc["sid"], c["sid"])), 404, 20404)


def test_user_delete_fixes_counts_and_created_by_becomes_system(bb: BB) -> None:
    svc = bb.new_service("user-del")
    identity = uid("leaver")
    tok = token_client(bb, svc["sid"], identity)
    made = new_channel(bb, svc["sid"], client=tok)
    assert made["created_by"] == identity
    by_basic = new_channel(bb, svc["sid"], CreatedBy=identity)
    other = new_channel(bb, svc["sid"])
    for c in (made, by_basic, other):
        add_member(bb, svc["sid"], c["sid"], identity)
        add_member(bb, svc["sid"], c["sid"], uid("stay"))
    invited = new_channel(bb, svc["sid"], Type="private")
    bb.http.post(f"{ch_url(svc['sid'], invited['sid'])}/Invites", data={"Identity": identity})
    assert bb.http.delete(f"/v2/Services/{svc['sid']}/Users/{identity}").status_code == 204
    for c in (made, by_basic, other):
        now = get_channel(bb, svc["sid"], c["sid"])
        assert now["members_count"] == 1
        members = bb.http.get(f"{ch_url(svc['sid'], c['sid'])}/Members").json()["members"]
        assert identity not in [m["identity"] for m in members]
    assert get_channel(bb, svc["sid"], made["sid"])["created_by"] == "system"
    assert get_channel(bb, svc["sid"], by_basic["sid"])["created_by"] == "system"
    assert bb.http.get(f"{ch_url(svc['sid'], invited['sid'])}/Invites").json()["invites"] == []
    listed = bb.http.get(ch_url(svc["sid"]), params=[("Type", "public"), ("Type", "private")]).json()["channels"]
    assert identity not in json.dumps(listed)
    # A new user of the same identity starts from zero.
    assert bb.new_user(svc["sid"], identity)["joined_channels_count"] == 0


def test_concurrent_adds_of_one_new_identity_into_20_channels(bb: BB) -> None:
    svc = bb.new_service("race-20")
    chans = [new_channel(bb, svc["sid"]) for _ in range(20)]
    identity = uid("racer")

    def add(c: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as cl:
            return cl.post(f"{ch_url(svc['sid'], c['sid'])}/Members", data={"Identity": identity})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(add, chans))
    assert [r.status_code for r in answers] == [201] * 20, [r.text for r in answers if r.status_code != 201]
    users = bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100}).json()["users"]
    assert [u["identity"] for u in users] == [identity]
    assert users[0]["joined_channels_count"] == 20
    assert get_user(bb, svc["sid"], identity)["joined_channels_count"] == 20


def test_concurrent_adds_of_one_identity_into_one_channel(bb: BB) -> None:
    svc = bb.new_service("race-1")
    c = new_channel(bb, svc["sid"])
    identity = uid("same")

    def add(_: int) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as cl:
            return cl.post(f"{ch_url(svc['sid'], c['sid'])}/Members", data={"Identity": identity})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(add, range(20)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 19
    for r in answers:
        if r.status_code == 409:
            assert_error(r, 409, 50404)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 1
    assert get_user(bb, svc["sid"], identity)["joined_channels_count"] == 1


def test_role_in_use_by_a_member_cannot_be_deleted(bb: BB, svc: dict[str, Any]) -> None:
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles",
                     data={"FriendlyName": uid("mrole"), "Type": "channel", "Permission": "sendMessage"})
    role = r.json()["sid"]
    c = new_channel(bb, svc["sid"])
    m = add_member(bb, svc["sid"], c["sid"], uid("holder"), RoleSid=role)
    r = bb.http.delete(f"/v2/Services/{svc['sid']}/Roles/{role}")
    assert 400 <= r.status_code < 500, r.text
    assert_not_5xx(r)
    assert bb.http.get(m["url"]).json()["role_sid"] == role


def test_default_roles_follow_twilio_current_lists(bb: BB) -> None:
    roles = bb.roles(bb.new_service("default-roles")["sid"])
    assert "editAnyMemberAttributes" in roles["service admin"]["permissions"]
    assert "editOwnMemberAttributes" in roles["channel user"]["permissions"]


# --- client tokens --------------------------------------------------------------------------


def test_client_creates_a_channel_and_is_its_creator(bb: BB) -> None:
    svc = bb.new_service("client-create")
    identity = uid("maker")
    tok = token_client(bb, svc["sid"], identity)
    c = new_channel(bb, svc["sid"], client=tok, FriendlyName="mine")
    assert c["created_by"] == identity
    # Joining its own channel: the creator role.
    m = add_member(bb, svc["sid"], c["sid"], identity, client=tok)
    assert m["role_sid"] == svc["default_channel_creator_role_sid"]


def test_client_joins_public_but_not_private_uninvited(bb: BB) -> None:
    svc = bb.new_service("client-join")
    identity = uid("joiner")
    tok = token_client(bb, svc["sid"], identity)
    pub = new_channel(bb, svc["sid"])
    priv = new_channel(bb, svc["sid"], Type="private")
    assert add_member(bb, svc["sid"], pub["sid"], identity, client=tok)["identity"] == identity
    assert_error(tok.post(f"{ch_url(svc['sid'], priv['sid'])}/Members", data={"Identity": identity}), 403, 20403)
    assert get_channel(bb, svc["sid"], priv["sid"])["members_count"] == 0
    bb.http.post(f"{ch_url(svc['sid'], priv['sid'])}/Invites", data={"Identity": identity})
    assert add_member(bb, svc["sid"], priv["sid"], identity, client=tok)["identity"] == identity


def test_client_cannot_add_others_20403(bb: BB) -> None:
    svc = bb.new_service("client-add")
    tok = token_client(bb, svc["sid"], uid("me"))
    c = new_channel(bb, svc["sid"])
    other = uid("other")
    assert_error(tok.post(f"{ch_url(svc['sid'], c['sid'])}/Members", data={"Identity": other}), 403, 20403)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{other}"), 404, 20404)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 0


def test_client_does_not_see_private_channels_it_is_not_in(bb: BB) -> None:
    svc = bb.new_service("client-list")
    identity = uid("viewer")
    tok = token_client(bb, svc["sid"], identity)
    pub = new_channel(bb, svc["sid"])
    hidden = new_channel(bb, svc["sid"], Type="private", UniqueName=uid("hidden"))
    mine = new_channel(bb, svc["sid"], Type="private")
    add_member(bb, svc["sid"], mine["sid"], identity)
    invited = new_channel(bb, svc["sid"], Type="private")
    bb.http.post(f"{ch_url(svc['sid'], invited['sid'])}/Invites", data={"Identity": identity})
    r = tok.get(ch_url(svc["sid"]), params=[("Type", "public"), ("Type", "private")])
    assert r.status_code == 200, r.text
    assert [c["sid"] for c in r.json()["channels"]] == [pub["sid"], mine["sid"], invited["sid"]]
    priv = tok.get(ch_url(svc["sid"]), params={"Type": "private"}).json()["channels"]
    assert hidden["sid"] not in [c["sid"] for c in priv]
    for ref in (hidden["sid"], hidden["unique_name"]):
        r = tok.get(ch_url(svc["sid"], ref))
        assert r.status_code in (403, 404), r.text
        assert_error(r, r.status_code, 20403 if r.status_code == 403 else 20404)
    r = tok.get(f"{ch_url(svc['sid'], hidden['sid'])}/Members")
    assert r.status_code in (403, 404), r.text
    assert tok.get(ch_url(svc["sid"], mine["sid"])).status_code == 200


def test_custom_role_without_create_channel_cannot_create(bb: BB) -> None:
    svc = bb.new_service("client-norole")
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Roles",
                     data={"FriendlyName": "reader", "Type": "deployment", "Permission": "joinChannel"})
    assert r.status_code == 201, r.text
    identity = uid("reader")
    bb.new_user(svc["sid"], identity, RoleSid=r.json()["sid"])
    tok = token_client(bb, svc["sid"], identity)
    assert_error(tok.post(ch_url(svc["sid"]), data={"FriendlyName": "nope"}), 403, 20403)
    assert bb.http.get(ch_url(svc["sid"])).json()["channels"] == []
    c = new_channel(bb, svc["sid"])
    assert add_member(bb, svc["sid"], c["sid"], identity, client=tok)["identity"] == identity


def test_client_basic_only_parameters_are_20403(bb: BB) -> None:
    svc = bb.new_service("client-basic-only")
    identity = uid("limited")
    tok = token_client(bb, svc["sid"], identity)
    for data in ({"CreatedBy": "someone"}, {"DateCreated": "2016-01-01T00:00:00Z"},
                 {"DateUpdated": "2016-01-01T00:00:00Z"}):
        assert_error(tok.post(ch_url(svc["sid"]), data=data), 403, 20403)
    assert bb.http.get(ch_url(svc["sid"]), params=[("Type", "public"), ("Type", "private")]).json()["channels"] == []
    other = bb.new_user(svc["sid"], uid("someone-else"))
    assert_error(tok.get(f"/v2/Services/{svc['sid']}/Users/{other['sid']}/Channels"), 403, 20403)
    assert tok.get(f"/v2/Services/{svc['sid']}/Users/{identity}/Channels").status_code == 200


def test_client_channel_edits_follow_member_role(bb: BB) -> None:
    svc = bb.new_service("client-edit")
    identity = uid("editor")
    tok = token_client(bb, svc["sid"], identity)
    c = new_channel(bb, svc["sid"], FriendlyName="orig")
    # Not a member: service user has no editChannelName at service level (Twilio's lists).
    r = tok.post(ch_url(svc["sid"], c["sid"]), data={"FriendlyName": "hacked"})
    assert_error(r, 403, 20403)
    assert_error(tok.delete(ch_url(svc["sid"], c["sid"])), 403, 20403)
    assert get_channel(bb, svc["sid"], c["sid"])["friendly_name"] == "orig"
    # As a channel admin member, the member role grants it.
    admin = bb.roles(svc["sid"])["channel admin"]["sid"]
    add_member(bb, svc["sid"], c["sid"], identity, RoleSid=admin)
    r = tok.post(ch_url(svc["sid"], c["sid"]), data={"FriendlyName": "renamed"})
    assert r.status_code == 200, r.text
    assert r.json()["friendly_name"] == "renamed"


def test_client_leaves_and_cannot_remove_others(bb: BB) -> None:
    svc = bb.new_service("client-leave")
    identity = uid("leaver")
    tok = token_client(bb, svc["sid"], identity)
    c = new_channel(bb, svc["sid"])
    mine = add_member(bb, svc["sid"], c["sid"], identity, client=tok)
    other = add_member(bb, svc["sid"], c["sid"], uid("victim"))
    assert_error(tok.delete(other["url"]), 403, 20403)
    assert bb.http.get(other["url"]).status_code == 200
    assert tok.delete(mine["url"]).status_code == 204
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 1
    assert get_user(bb, svc["sid"], identity)["joined_channels_count"] == 0


# --- methods, HEAD, malformed input ----------------------------------------------------------


def test_undeclared_methods_are_405_20004_with_allow(bb: BB, svc: dict[str, Any]) -> None:
    c = new_channel(bb, svc["sid"])
    identity = uid("meth")
    m = add_member(bb, svc["sid"], c["sid"], identity)
    u = get_user(bb, svc["sid"], identity)
    inv_user = bb.new_user(svc["sid"], uid("meth-inv"))
    inv = bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Invites", data={"Identity": inv_user["identity"]}).json()
    cases = [
        (ch_url(svc["sid"]), ["PUT", "PATCH", "DELETE"]),
        (ch_url(svc["sid"], c["sid"]), ["PUT", "PATCH"]),
        (f"{ch_url(svc['sid'], c['sid'])}/Members", ["PUT", "PATCH", "DELETE"]),
        (f"{ch_url(svc['sid'], c['sid'])}/Members/{m['sid']}", ["PUT", "PATCH"]),
        (f"{ch_url(svc['sid'], c['sid'])}/Invites", ["PUT", "PATCH", "DELETE"]),
        (f"{ch_url(svc['sid'], c['sid'])}/Invites/{inv['sid']}", ["PUT", "PATCH", "POST"]),
        (f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels", ["PUT", "PATCH", "DELETE", "POST"]),
        (f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels/{c['sid']}", ["PUT", "PATCH"]),
    ]
    for path, methods in cases:
        for method in methods:
            r = bb.http.request(method, path, **form([("FriendlyName", "x"), ("Identity", uid())]))
            assert_error(r, 405, 20004)
            assert r.headers.get("allow"), (method, path)
            assert method not in [x.strip() for x in r.headers["allow"].split(",")]
    # Nothing changed.
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 1
    assert bb.http.get(f"{ch_url(svc['sid'], c['sid'])}/Invites/{inv['sid']}").status_code == 200


def test_head_never_changes_state(bb: BB) -> None:
    svc = bb.new_service("head")
    c = new_channel(bb, svc["sid"])
    identity = uid("head")
    paths = [ch_url(svc["sid"]), ch_url(svc["sid"], c["sid"]), f"{ch_url(svc['sid'], c['sid'])}/Members",
             f"{ch_url(svc['sid'], c['sid'])}/Members/{identity}", f"{ch_url(svc['sid'], c['sid'])}/Invites",
             f"/v2/Services/{svc['sid']}/Users/{identity}/Channels"]
    for path in paths:
        r = bb.http.request("HEAD", f"{path}?Identity={identity}&FriendlyName=x&UniqueName=y",
                            **form([("Identity", identity), ("FriendlyName", "x")]))
        assert r.status_code in (200, 404, 405), (path, r.status_code)
        assert r.content == b""
    assert get_channel(bb, svc["sid"], c["sid"]) == c
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}"), 404, 20404)
    assert len(bb.http.get(ch_url(svc["sid"])).json()["channels"]) == 1
    tok = token_client(bb, svc["sid"], uid("head-client"))
    r = tok.request("HEAD", f"{ch_url(svc['sid'], c['sid'])}/Members", **form([("Identity", "whoever")]))
    assert r.status_code in (200, 405)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 0


@pytest.mark.parametrize("params", [
    {"PageSize": "abc"}, {"PageSize": "0"}, {"PageSize": "-5"}, {"Page": "x"}, {"PageToken": "garbage"},
    {"PageToken": "%%%"}, {"Type": ""}, {"PageSize": "99999999999999999999999"},
])
def test_malformed_list_parameters_are_4xx_not_500(bb: BB, svc: dict[str, Any], params: dict[str, str]) -> None:
    c = new_channel(bb, svc["sid"])
    u = bb.new_user(svc["sid"], uid("mal"))
    for path in (ch_url(svc["sid"]), f"{ch_url(svc['sid'], c['sid'])}/Members",
                 f"{ch_url(svc['sid'], c['sid'])}/Invites", f"/v2/Services/{svc['sid']}/Users/{u['sid']}/Channels"):
        r = bb.http.get(path, params=params)
        assert_not_5xx(r)


@pytest.mark.parametrize("body", [
    b"Identity=%ZZ", b"\xff\xfe\x00", b"Identity=a&Identity=b", b"FriendlyName=" + b"\x00" * 5,
    b"UniqueName=%00", b"Attributes=%7B%22a%22%3A%20%22%00%22%7D", b"Identity=\xed\xa0\x80",
    b"LastConsumedMessageIndex=99999999999999999999999999&Identity=big",
])
def test_malformed_bodies_never_500(bb: BB, svc: dict[str, Any], body: bytes) -> None:
    c = new_channel(bb, svc["sid"])
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    for path in (ch_url(svc["sid"]), ch_url(svc["sid"], c["sid"]), f"{ch_url(svc['sid'], c['sid'])}/Members",
                 f"{ch_url(svc['sid'], c['sid'])}/Invites"):
        assert_not_5xx(bb.http.post(path, content=body, headers=headers))


@pytest.mark.parametrize("ref", ["%00", "%FF", "a" * 5000, "%2E%2E", "CH" + "z" * 32, "CH" + "A" * 32])
def test_malformed_path_keys_never_500(bb: BB, svc: dict[str, Any], ref: str) -> None:
    c = new_channel(bb, svc["sid"])
    for path in (ch_url(svc["sid"], ref), f"{ch_url(svc['sid'], c['sid'])}/Members/{ref}",
                 f"{ch_url(svc['sid'], c['sid'])}/Invites/{ref}", f"/v2/Services/{svc['sid']}/Users/x/Channels/{ref}"):
        assert_not_5xx(bb.http.get(path))


# --- deeper: custom roles, limits under races, PII ------------------------------------------


def new_role(bb: BB, svc_sid: str, kind: str, *perms: str) -> str:
    r = bb.http.post(f"/v2/Services/{svc_sid}/Roles",
                     **form([("FriendlyName", uid("role")), ("Type", kind)] + [("Permission", p) for p in perms]))
    assert r.status_code == 201, r.text
    return r.json()["sid"]


def test_client_permissions_come_from_custom_roles(bb: BB) -> None:
    svc = bb.new_service("client-custom")
    c = new_channel(bb, svc["sid"])
    # A service role without joinChannel cannot join a public channel.
    nojoin = new_role(bb, svc["sid"], "deployment", "createChannel")
    bb.new_user(svc["sid"], "nojoin", RoleSid=nojoin)
    assert_error(token_client(bb, svc["sid"], "nojoin").post(f"{ch_url(svc['sid'], c['sid'])}/Members",
                                                             data={"Identity": "nojoin"}), 403, 20403)
    # A channel role without leaveChannel / editOwnMemberAttributes / inviteMember.
    stay = new_role(bb, svc["sid"], "channel", "sendMessage")
    add_member(bb, svc["sid"], c["sid"], "stayer", RoleSid=stay)
    tok = token_client(bb, svc["sid"], "stayer")
    assert_error(tok.delete(f"{ch_url(svc['sid'], c['sid'])}/Members/stayer"), 403, 20403)
    assert_error(tok.delete(f"/v2/Services/{svc['sid']}/Users/stayer/Channels/{c['sid']}"), 403, 20403)
    assert_error(tok.post(f"{ch_url(svc['sid'], c['sid'])}/Members/stayer", data={"Attributes": "{}"}), 403, 20403)
    bb.new_user(svc["sid"], "target")
    assert_error(tok.post(f"{ch_url(svc['sid'], c['sid'])}/Invites", data={"Identity": "target"}), 403, 20403)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 1
    # Its own user channel's notification level and consumption are its own.
    r = tok.post(f"/v2/Services/{svc['sid']}/Users/stayer/Channels/{c['sid']}", data={"NotificationLevel": "muted"})
    assert r.status_code == 200 and r.json()["notification_level"] == "muted"


def test_client_member_attribute_permissions(bb: BB) -> None:
    svc = bb.new_service("client-attrs")
    c = new_channel(bb, svc["sid"])
    add_member(bb, svc["sid"], c["sid"], "me")
    other = add_member(bb, svc["sid"], c["sid"], "you")
    tok = token_client(bb, svc["sid"], "me")
    r = tok.post(f"{ch_url(svc['sid'], c['sid'])}/Members/me", data={"Attributes": '{"mine": 1}'})
    assert r.status_code == 200 and json.loads(r.json()["attributes"]) == {"mine": 1}
    assert_error(tok.post(other["url"], data={"Attributes": '{"yours": 1}'}), 403, 20403)
    # The service admin role carries editAnyMemberAttributes.
    bb.new_user(svc["sid"], "boss", RoleSid=bb.roles(svc["sid"])["service admin"]["sid"])
    r = token_client(bb, svc["sid"], "boss").post(other["url"], data={"Attributes": '{"boss": 1}'})
    assert r.status_code == 200, r.text
    assert json.loads(bb.http.get(other["url"]).json()["attributes"]) == {"boss": 1}


def test_service_admin_client_adds_and_removes_others(bb: BB) -> None:
    svc = bb.new_service("client-admin")
    c = new_channel(bb, svc["sid"])
    bb.new_user(svc["sid"], "admin", RoleSid=bb.roles(svc["sid"])["service admin"]["sid"])
    tok = token_client(bb, svc["sid"], "admin")
    m = add_member(bb, svc["sid"], c["sid"], "newcomer", client=tok)
    assert get_user(bb, svc["sid"], "newcomer")["role_sid"] == svc["default_service_role_sid"]
    assert tok.delete(m["url"]).status_code == 204
    assert get_user(bb, svc["sid"], "newcomer")["joined_channels_count"] == 0


def test_client_invite_is_created_by_the_client_and_becomes_system(bb: BB) -> None:
    svc = bb.new_service("client-invite")
    c = new_channel(bb, svc["sid"], Type="private")
    add_member(bb, svc["sid"], c["sid"], "host")
    bb.new_user(svc["sid"], "guest")
    tok = token_client(bb, svc["sid"], "host")
    r = tok.post(f"{ch_url(svc['sid'], c['sid'])}/Invites", data={"Identity": "guest"})
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == "host"
    guest = token_client(bb, svc["sid"], "guest")
    listed = guest.get(ch_url(svc["sid"]), params={"Type": "private"}).json()["channels"]
    assert [x["sid"] for x in listed] == [c["sid"]]
    ucs = guest.get(f"/v2/Services/{svc['sid']}/Users/guest/Channels").json()["channels"]
    assert [(x["channel_sid"], x["status"]) for x in ucs] == [(c["sid"], "invited")]
    assert bb.http.delete(f"/v2/Services/{svc['sid']}/Users/host").status_code == 204
    assert bb.http.get(r.json()["url"]).json()["created_by"] == "system"


def test_limits_hold_under_concurrent_adds(bb: BB) -> None:
    svc = bb.new_service("limit-race")
    set_limits(bb, svc["sid"], **{"Limits.ChannelMembers": "5", "Limits.UserChannels": "5"})
    c = new_channel(bb, svc["sid"])

    def add(args: tuple[str, str]) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as cl:
            return cl.post(f"{ch_url(svc['sid'], args[0])}/Members", data={"Identity": args[1]})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(add, [(c["sid"], f"many-{i}") for i in range(20)]))
    assert sorted(r.status_code for r in answers) == [201] * 5 + [400] * 15
    for r in answers:
        if r.status_code == 400:
            assert_error(r, 400, 50403)
    assert get_channel(bb, svc["sid"], c["sid"])["members_count"] == 5
    assert len(bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100}).json()["users"]) == 5
    chans = [new_channel(bb, svc["sid"])["sid"] for _ in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(add, [(ch, "solo") for ch in chans]))
    assert sorted(r.status_code for r in answers) == [201] * 5 + [400] * 7
    for r in answers:
        if r.status_code == 400:
            assert_error(r, 400, 50208)
    assert get_user(bb, svc["sid"], "solo")["joined_channels_count"] == 5


def test_service_delete_with_channels_members_and_invites(bb: BB) -> None:
    svc = bb.new_service("svc-del")
    c = new_channel(bb, svc["sid"], UniqueName="gone")
    add_member(bb, svc["sid"], c["sid"], "m")
    bb.new_user(svc["sid"], "i")
    bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/Invites", data={"Identity": "i"})
    assert bb.http.delete(f"/v2/Services/{svc['sid']}").status_code == 204
    assert_error(bb.http.get(ch_url(svc["sid"], c["sid"])), 404, 20404)


@pytest.mark.skipif(bool(PG_URL), reason="inspects the SQLite database files")
def test_deleted_member_identity_leaves_no_trace_in_sqlite_files(bb: BB) -> None:
    svc = bb.new_service("pii-members")
    marker = uuid.uuid4().hex
    identity = f"pii-{marker}"
    tok = token_client(bb, svc["sid"], identity)
    made = new_channel(bb, svc["sid"], client=tok)
    add_member(bb, svc["sid"], made["sid"], identity, Attributes=json.dumps({"m": marker}))
    new_channel(bb, svc["sid"], CreatedBy=identity)
    priv = new_channel(bb, svc["sid"], Type="private")
    bb.http.post(f"{ch_url(svc['sid'], priv['sid'])}/Invites", data={"Identity": identity})
    bb.http.post(f"{ch_url(svc['sid'], made['sid'])}/Members/{identity}",
                 data={"RoleSid": bb.roles(svc["sid"])["channel admin"]["sid"]})
    bb.new_user(svc["sid"], "guest-" + marker[:6])
    assert tok.post(f"{ch_url(svc['sid'], made['sid'])}/Invites",
                    data={"Identity": "guest-" + marker[:6]}).status_code == 201
    assert bb.http.delete(f"/v2/Services/{svc['sid']}/Users/{identity}").status_code == 204
    db = Path(bb.server.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///"))
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert files
    for path in files:
        assert marker.encode() not in path.read_bytes(), f"a deleted identity is still in {path.name}"


@pytest.mark.parametrize("sub", ["Members", "Invites"])
def test_identity_filter_with_nul_is_not_500(bb: BB, svc: dict[str, Any], sub: str) -> None:
    # Malformed input never 500: `Identity=a%00b` on POST is 400 20001, on the Users list too.
    c = new_channel(bb, svc["sid"])
    assert_error(bb.http.post(f"{ch_url(svc['sid'], c['sid'])}/{sub}", data={"Identity": "a\x00b"}), 400, 20001)
    assert_not_5xx(bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"Identity": "a\x00b"}))
    assert_error(bb.http.get(f"{ch_url(svc['sid'], c['sid'])}/{sub}", params={"Identity": "a\x00b"}), 400, 20001)
