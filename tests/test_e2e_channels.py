"""End to end (SPEC §8): a real `tokensvc serve` driven by the official `twilio` package, and
concurrent member adds against it."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from conftest import Server, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("e2e-channels"))
    yield s
    s.stop()


@pytest.fixture
def client(srv: Server) -> Client:
    c = Client(srv.account_sid, srv.auth_token)
    c.chat.base_url = srv.base
    return c


def code_of(call: object) -> int:
    with pytest.raises(TwilioRestException) as err:
        call()  # type: ignore[operator]
    return int(err.value.code)


def test_channels_members_invites_user_channels_through_the_twilio_package(client: Client) -> None:
    svc = client.chat.v2.services.create(friendly_name="e2e channels")
    service = client.chat.v2.services(svc.sid)
    ch = service.channels.create(friendly_name="General", unique_name="general", attributes='{"a": 1}')
    assert ch.sid.startswith("CH") and ch.created_by == "system" and ch.type == "public"
    assert service.channels("general").fetch().sid == ch.sid
    assert service.channels(ch.sid).update(friendly_name="Renamed").friendly_name == "Renamed"
    assert [c.sid for c in service.channels.list()] == [ch.sid]

    member = service.channels(ch.sid).members.create(identity="newcomer")
    assert member.sid.startswith("MB") and member.role_sid == svc.default_channel_role_sid
    user = service.users("newcomer").fetch()
    assert user.role_sid == svc.default_service_role_sid and user.joined_channels_count == 1
    assert service.channels(ch.sid).members("newcomer").fetch().sid == member.sid
    assert [m.identity for m in service.channels(ch.sid).members.list(identity=["newcomer"])] == ["newcomer"]
    assert service.channels(ch.sid).members(member.sid).update(attributes='{"m": 1}').attributes == '{"m": 1}'

    user_channels = service.users(user.sid).user_channels.list()
    assert [(uc.channel_sid, uc.member_sid, uc.status) for uc in user_channels] == [(ch.sid, member.sid, "joined")]
    muted = service.users(user.sid).user_channels(ch.sid).update(notification_level="muted")
    assert muted.notification_level == "muted"

    service.users.create(identity="guest")
    invite = service.channels(ch.sid).invites.create(identity="guest")
    assert invite.sid.startswith("IN") and invite.identity == "guest"
    assert service.channels(ch.sid).invites(invite.sid).fetch().sid == invite.sid
    assert [i.sid for i in service.channels(ch.sid).invites.list()] == [invite.sid]

    chans = service.channels
    assert code_of(lambda: chans.create(friendly_name="x" * 257)) == 50003
    assert code_of(lambda: chans.create(unique_name="x" * 257)) == 50004
    assert code_of(lambda: chans.create(unique_name="CH" + "0" * 32)) == 50306
    assert code_of(lambda: chans.create(unique_name="general")) == 50307
    assert code_of(lambda: chans.create(attributes="{")) == 50304
    assert code_of(lambda: chans.create(attributes='"' + "x" * 17000 + '"')) == 50303
    assert code_of(lambda: chans.create(date_created="nope")) == 50308  # type: ignore[arg-type]
    assert code_of(lambda: chans.create(date_updated="nope")) == 50309  # type: ignore[arg-type]
    assert code_of(lambda: chans(ch.sid).update()) == 50347
    members = service.channels(ch.sid).members
    assert code_of(lambda: members.create(identity="newcomer")) == 50404
    assert code_of(lambda: members.create(identity="r", role_sid=svc.default_service_role_sid)) == 50101
    assert code_of(lambda: members.create(identity="r", last_consumed_message_index=-1)) == 50406
    assert code_of(lambda: members.create(identity="r", last_consumption_timestamp="x")) == 50405  # type: ignore[arg-type]
    assert code_of(lambda: service.channels(ch.sid).invites.create(identity="guest")) == 50212
    assert code_of(lambda: service.channels(ch.sid).invites.create(identity="nobody")) == 20404
    assert code_of(lambda: service.users(user.sid).user_channels(ch.sid).update(
        notification_level="loud")) == 50210  # type: ignore[arg-type]
    service.update(limits_channel_members=1, limits_user_channels=1)
    assert code_of(lambda: members.create(identity="late")) == 50403
    other = chans.create()
    assert code_of(lambda: service.channels(other.sid).members.create(identity="newcomer")) == 50208
    assert code_of(lambda: service.users("late").fetch()) == 20404

    assert service.channels(ch.sid).delete() is True
    assert service.users("newcomer").fetch().joined_channels_count == 0
    assert code_of(lambda: service.channels("general").fetch()) == 20404


def _post(base: str, auth: tuple[str, str], url: str, data: dict[str, str]) -> httpx.Response:
    return httpx.post(base + url, data=data, auth=auth, timeout=30)


def test_concurrent_adds_of_one_new_identity_into_20_channels_make_one_user(srv: Server) -> None:
    http = httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30)
    svc = http.post("/v2/Services", data={"FriendlyName": "race"}).json()["sid"]
    chans = [http.post(f"/v2/Services/{svc}/Channels", data={}).json()["sid"] for _ in range(20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda ch: _post(srv.base, srv.auth, f"/v2/Services/{svc}/Channels/{ch}/Members",
                                                 {"Identity": "racer"}), chans))
    assert [r.status_code for r in results] == [201] * 20, [r.text for r in results if r.status_code != 201]
    users = http.get(f"/v2/Services/{svc}/Users").json()["users"]
    assert [(u["identity"], u["joined_channels_count"]) for u in users] == [("racer", 20)]
    assert {r.json()["identity"] for r in results} == {"racer"}
    assert http.get(f"/v2/Services/{svc}/Users/racer").json()["joined_channels_count"] == 20
    http.close()


def test_concurrent_adds_of_one_identity_into_one_channel_one_wins(srv: Server) -> None:
    http = httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30)
    svc = http.post("/v2/Services", data={"FriendlyName": "race"}).json()["sid"]
    ch = http.post(f"/v2/Services/{svc}/Channels", data={}).json()["sid"]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: _post(srv.base, srv.auth, f"/v2/Services/{svc}/Channels/{ch}/Members",
                                                {"Identity": "solo"}), range(20)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * 19, [r.text for r in results]
    assert {r.json()["code"] for r in results if r.status_code == 409} == {50404}
    assert http.get(f"/v2/Services/{svc}/Channels/{ch}").json()["members_count"] == 1
    assert http.get(f"/v2/Services/{svc}/Users/solo").json()["joined_channels_count"] == 1
    http.close()


def test_concurrent_unique_names_one_wins_50307(srv: Server) -> None:
    http = httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30)
    svc = http.post("/v2/Services", data={"FriendlyName": "race"}).json()["sid"]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: _post(srv.base, srv.auth, f"/v2/Services/{svc}/Channels",
                                                {"UniqueName": "one"}), range(10)))
    assert sorted(r.status_code for r in results) == [201] + [409] * 9
    assert {r.json()["code"] for r in results if r.status_code == 409} == {50307}
    assert "Traceback" not in srv.logs()
    http.close()
