"""The store behaves the same on SQLite and on PostgreSQL (issue 5): uniqueness, race-safe
create and get-or-create, keyset paging, cascades, and inputs one of them refuses.

These run in both passes of .ci/run; each is a case where the two databases differ underneath
(PostgreSQL refuses NUL in text and out-of-range integers, enforces VARCHAR lengths, runs
concurrent transactions truly in parallel; psycopg reports rowcounts differently).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, insert, select

from conftest import Api, assert_error, race
from tokensvc import errors
from tokensvc.paging import MAX_ROW_ID, Cursors
from tokensvc.sids import new_sid
from tokensvc.store.roles import create_role
from tokensvc.store.services import find_service
from tokensvc.store.tables import connections, roles, users
from tokensvc.store.users import create_user, delete_user, get_or_create


def users_url(service: dict[str, Any]) -> str:
    return f"/v2/Services/{service['sid']}/Users"


def test_identities_are_unique_exactly_as_given(api: Api, service: dict[str, Any]) -> None:
    # No case folding, trimming or normalisation in either database's comparison.
    variants = ["alice", "Alice", "alice ", " alice", "\uff41lice", "alic\u00e9", "alice\u0301"]
    sids = []
    for identity in variants:
        r = api.post(users_url(service), {"Identity": identity})
        assert r.status_code == 201, (identity, r.text)
        sids.append(r.json()["sid"])
    assert len(set(sids)) == len(variants)
    for identity in variants:
        assert_error(api.post(users_url(service), {"Identity": identity}), 409, 50201)
        got = api.get(f"{users_url(service)}/{quote(identity, safe='')}")
        assert got.status_code == 200 and got.json()["identity"] == identity


def test_concurrent_creates_of_one_identity_one_wins_the_rest_get_50201(api: Api, service: dict[str, Any]) -> None:
    db = api.app.state.ctx.db
    svc = db.call(lambda conn: find_service(conn, service["sid"]))
    results = race(16, lambda: db.call(lambda conn: create_user(conn, service=svc, identity="contested")))
    made = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, errors.TwilioError)]
    assert len(made) == 1 and len(refused) == 15, results
    assert {(e.status, e.code) for e in refused} == {(409, 50201)}
    assert api.get(f"{users_url(service)}/contested").json()["sid"] == made[0]["sid"]


def test_concurrent_get_or_create_yields_one_user(api: Api, service: dict[str, Any]) -> None:
    db = api.app.state.ctx.db
    svc = db.call(lambda conn: find_service(conn, service["sid"]))
    results = race(16, lambda: db.call(lambda conn: get_or_create(conn, service=svc, identity="crowd")))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({user["sid"] for user, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    count = db.call(lambda conn: conn.execute(select(func.count()).select_from(users).where(
        users.c.service_sid == service["sid"], users.c.identity == "crowd")).scalar())
    assert count == 1


def test_keyset_pages_are_complete_and_in_creation_order_with_interleaved_services(api: Api) -> None:
    # Another service's users take every other id, so a page's ids are never contiguous.
    mine, other = api.new_service("mine"), api.new_service("other")
    expected = []
    for i in range(23):
        expected.append(api.post(users_url(mine), {"Identity": f"u{i:02d}"}).json()["sid"])
        assert api.post(users_url(other), {"Identity": f"u{i:02d}"}).status_code == 201
    seen, pages = [], []
    url: str | None = f"{users_url(mine)}?PageSize=5"
    while url:
        body = api.get(url).json()
        pages.append(body)
        seen += [u["sid"] for u in body["users"]]
        url = body["meta"]["next_page_url"]
    assert seen == expected
    assert [len(p["users"]) for p in pages] == [5, 5, 5, 5, 3]
    back = api.get(pages[-1]["meta"]["previous_page_url"]).json()
    assert [u["sid"] for u in back["users"]] == expected[15:20]


def test_page_tokens_beyond_any_row_id_are_invalid_not_a_database_error(api: Api, service: dict[str, Any]) -> None:
    # Sealed as the server seals them, so only the row id is out of range.
    cursors = Cursors(api.app.state.ctx.box, f"/v2/Services/{service['sid']}/Users")
    for direction in "np":
        for row_id in (MAX_ROW_ID + 1, 2**63, 10**40):
            r = api.get(users_url(service), params={"PageToken": cursors.encode(direction, row_id)})
            assert_error(r, 400, 21481)
    ok = api.get(users_url(service), params={"PageToken": cursors.encode("p", MAX_ROW_ID)})
    assert ok.status_code == 200, ok.text


def test_deleting_a_service_cascades_to_its_roles_users_and_connections(api: Api) -> None:
    svc = api.new_service("doomed")
    keep = api.new_service("kept")
    for s in (svc, keep):
        for name in ("a", "b"):
            assert api.post(users_url(s), {"Identity": name}).status_code == 201
    db = api.app.state.ctx.db
    user_sid = api.get(f"{users_url(svc)}/a").json()["sid"]
    db.call(lambda conn: conn.execute(insert(connections).values(
        id=new_sid("CN"), user_sid=user_sid, service_sid=svc["sid"], node="test", heartbeat_at=1, date_created=1)))

    assert api.delete(f"/v2/Services/{svc['sid']}").status_code == 204

    def counts(service_sid: str) -> tuple[int, int, int]:
        def q(conn: Any) -> tuple[int, int, int]:
            n_roles, n_users, n_connections = (
                conn.execute(select(func.count()).select_from(t).where(t.c.service_sid == service_sid)).scalar()
                for t in (roles, users, connections))
            return n_roles, n_users, n_connections
        return db.call(q)

    assert counts(svc["sid"]) == (0, 0, 0)
    assert counts(keep["sid"]) == (4, 2, 0)


def test_deleting_a_user_deletes_its_connections(api: Api, service: dict[str, Any]) -> None:
    db = api.app.state.ctx.db
    user_sid = api.post(users_url(service), {"Identity": "connected"}).json()["sid"]
    db.call(lambda conn: conn.execute(insert(connections).values(
        id=new_sid("CN"), user_sid=user_sid, service_sid=service["sid"], node="test", heartbeat_at=1, date_created=1)))
    assert api.delete(f"{users_url(service)}/{user_sid}").status_code == 204
    left = db.call(lambda conn: conn.execute(select(func.count()).select_from(connections).where(
        connections.c.user_sid == user_sid)).scalar())
    assert left == 0


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_nul_in_a_user_path_is_not_found(api: Api, service: dict[str, Any], method: str) -> None:
    r = api.client.request(method, f"{users_url(service)}/a%00b", auth=api.auth,
                           data={"FriendlyName": "x"} if method == "POST" else None)
    assert_error(r, 404, 20404)
    assert_error(api.get(f"{users_url(service)}/a%00b/Channels"), 404, 20404)


def test_nul_in_a_service_sid_is_not_found(api: Api) -> None:
    assert_error(api.post("/v2/Services/IS%00/Tokens", {"Identity": "x"}), 404, 20404)
    assert_error(api.get("/v2/Services/IS%00/Users"), 404, 20404)
    assert_error(api.get("/v2/Services/IS%00"), 404, 20404)


@pytest.mark.parametrize("prefix", ["AC", "SK"])
def test_nul_in_a_basic_username_is_401(api: Api, prefix: str) -> None:
    creds = base64.b64encode(f"{prefix}{chr(0) * 32}:secret".encode()).decode()
    assert_error(api.client.get("/v2/Services", headers={"Authorization": f"Basic {creds}"}), 401, 20003)


def test_longest_values_round_trip_in_characters_not_bytes(api: Api, service: dict[str, Any]) -> None:
    # VARCHAR(256) on PostgreSQL counts characters: 256 four-byte characters fit.
    identity = "😀" * 256
    name = "é" * 256
    attributes = '{"k": "%s"}' % ("ü" * 8000)  # ~16 000 bytes, under the 16 KiB bound
    r = api.post(users_url(service), {"Identity": identity, "FriendlyName": name, "Attributes": attributes})
    assert r.status_code == 201, r.text
    got = api.get(f"{users_url(service)}/{quote(identity, safe='')}").json()
    assert (got["identity"], got["friendly_name"], got["attributes"]) == (identity, name, attributes)
    assert_error(api.post(users_url(service), {"Identity": "😀" * 257}), 400, 50207)
    token = api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": "ß" * 256})
    assert token.status_code == 201 and token.json()["user_created"] is True, token.text


def test_booleans_and_integers_come_back_as_json_types(api: Api, service: dict[str, Any]) -> None:
    r = api.post(f"/v2/Services/{service['sid']}", {"ReachabilityEnabled": "true", "ReadStatusEnabled": "false",
                                                     "TypingIndicatorTimeout": "86400"})
    assert r.status_code == 200, r.text
    body = api.get(f"/v2/Services/{service['sid']}").json()
    assert body["reachability_enabled"] is True and body["read_status_enabled"] is False
    assert body["typing_indicator_timeout"] == 86400 and type(body["typing_indicator_timeout"]) is int


def test_concurrent_deletes_of_one_user_succeed_once(api: Api, service: dict[str, Any]) -> None:
    # PostgreSQL lets every racer read the row before one deletes it; only one may say 204.
    db = api.app.state.ctx.db
    for round_ in range(3):
        sid = api.post(users_url(service), {"Identity": f"doomed-{round_}"}).json()["sid"]
        graves = api.app.state.ctx.tombstones
        results = race(8, lambda sid=sid, graves=graves: db.call(
            lambda conn: delete_user(conn, service_sid=service["sid"], key=sid, graves=graves)))
        assert results.count(sid) == 1, results
        assert all(isinstance(r, errors.TwilioError) and r.status == 404 for r in results if r != sid), results


def test_writes_for_a_service_deleted_meanwhile_are_404_not_a_database_error(api: Api) -> None:
    # The token path holds the service from a 1 s cache: its row may be gone by the insert.
    svc = api.new_service("vanishing")
    db = api.app.state.ctx.db
    stale = db.call(lambda conn: dict(find_service(conn, svc["sid"])))
    assert api.delete(f"/v2/Services/{svc['sid']}").status_code == 204
    for write in (lambda conn: get_or_create(conn, service=stale, identity="late"),
                  lambda conn: create_user(conn, service=stale, identity="late"),
                  lambda conn: create_role(conn, service=stale, friendly_name="late", type="deployment",
                                           permissions=[])):
        with pytest.raises(errors.TwilioError) as refused:
            db.call(write)
        assert (refused.value.status, refused.value.code) == (404, 20404)
