"""User Channels API (SPEC §8): a user's joined and invited channels."""

from __future__ import annotations

from channel_helpers import as_client, channels_url, client_token, invites_url, make_channel, members_url, new_user
from conftest import Api, assert_error

FIELDS = {"account_sid", "service_sid", "channel_sid", "user_sid", "member_sid", "status",
          "last_consumed_message_index", "unread_messages_count", "links", "url", "notification_level"}


def uc_url(service: dict, user: str) -> str:
    return f"/v2/Services/{service['sid']}/Users/{user}/Channels"


def test_lists_joined_and_invited_channels(api: Api, service: dict) -> None:
    a, b = make_channel(api, service, UniqueName="a"), make_channel(api, service)
    u = new_user(api, service, "uma")
    m = api.post(members_url(service, a), {"Identity": "uma"}).json()
    api.post(invites_url(service, b), {"Identity": "uma"})
    body = api.get(uc_url(service, "uma")).json()
    rows = body["channels"]
    assert [set(r) for r in rows] == [FIELDS, FIELDS]
    assert [(r["channel_sid"], r["status"], r["member_sid"]) for r in rows] == [
        (a["sid"], "joined", m["sid"]), (b["sid"], "invited", None)]
    first = rows[0]
    assert (first["user_sid"], first["notification_level"], first["unread_messages_count"]) == (
        u["sid"], "default", None)
    assert first["links"]["member"] == f"http://testserver{members_url(service, a)}/{m['sid']}"
    assert first["url"] == f"http://testserver{uc_url(service, u['sid'])}/{a['sid']}"
    assert api.get(uc_url(service, "uma"), params={"PageSize": 500}).json()["meta"]["page_size"] == 50
    assert api.get(f"{uc_url(service, 'uma')}/a").json()["member_sid"] == m["sid"]


def test_update_notification_level_and_consumption(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    api.post(members_url(service, ch), {"Identity": "vic"})
    url = f"{uc_url(service, 'vic')}/{ch['sid']}"
    r = api.post(url, {"NotificationLevel": "muted", "LastConsumedMessageIndex": "4",
                       "LastConsumptionTimestamp": "2021-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    assert (r.json()["notification_level"], r.json()["last_consumed_message_index"],
            r.json()["unread_messages_count"]) == ("muted", 4, 0)
    assert_error(api.post(url, {"NotificationLevel": "loud"}), 400, 50210)
    assert_error(api.post(url, {"LastConsumedMessageIndex": "x"}), 400, 50406)
    assert_error(api.post(url, {"LastConsumptionTimestamp": "x"}), 400, 50405)
    assert_error(api.get(f"{uc_url(service, 'vic')}/{make_channel(api, service)['sid']}"), 404, 20404)


def test_delete_leaves_the_channel_or_drops_the_invite(api: Api, service: dict) -> None:
    a, b = make_channel(api, service), make_channel(api, service)
    api.post(members_url(service, a), {"Identity": "wes"})
    api.post(invites_url(service, b), {"Identity": "wes"})
    assert api.delete(f"{uc_url(service, 'wes')}/{a['sid']}").status_code == 204
    assert api.delete(f"{uc_url(service, 'wes')}/{b['sid']}").status_code == 204
    assert api.get(uc_url(service, "wes")).json()["channels"] == []
    assert api.get(f"/v2/Services/{service['sid']}/Users/wes").json()["joined_channels_count"] == 0
    assert api.get(f"{channels_url(service)}/{a['sid']}").json()["members_count"] == 0
    assert api.get(f"{channels_url(service)}/{b['sid']}/Invites").json()["invites"] == []


def test_a_client_sees_only_its_own_user_channels(api: Api, service: dict) -> None:
    ch = make_channel(api, service)
    api.post(members_url(service, ch), {"Identity": "xia"})
    api.post(members_url(service, ch), {"Identity": "yul"})
    xia = client_token(api, service, "xia")
    assert as_client(api, xia, "GET", uc_url(service, "xia")).status_code == 200
    assert_error(as_client(api, xia, "GET", uc_url(service, "yul")), 403, 20403)
    assert_error(as_client(api, xia, "DELETE", f"{uc_url(service, 'yul')}/{ch['sid']}"), 403, 20403)
    muted = as_client(api, xia, "POST", f"{uc_url(service, 'xia')}/{ch['sid']}", {"NotificationLevel": "muted"})
    assert muted.status_code == 200, muted.text
    assert as_client(api, xia, "DELETE", f"{uc_url(service, 'xia')}/{ch['sid']}").status_code == 204
    assert_error(api.client.request("PUT", f"{uc_url(service, 'xia')}/{ch['sid']}", auth=api.auth), 405, 20004)
