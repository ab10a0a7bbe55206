"""GET /v2/Services/{IS}/Users with the SPEC §11 filters (tokensvc extensions): Identity
(repeated), IdentityPrefix, RoleSid, UpdatedAfter; AND together; Basic only; every page URL
carries them; a bad value is 400 20001. On the suite's database (SQLite file or PostgreSQL), and
through a real `tokensvc serve` with the official twilio package following the page links.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import event, update
from twilio.rest import Client

from channel_helpers import client_token
from conftest import Api, Server, assert_error
from tokensvc.formats import iso8601
from tokensvc.paging import Cursors
from tokensvc.store.tables import users

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z: before any user the suite creates (they get now())


def users_url(service: dict[str, Any]) -> str:
    return f"/v2/Services/{service['sid']}/Users"


def create(api: Api, service: dict[str, Any], *identities: str, **fields: str) -> list[dict[str, Any]]:
    made = []
    for identity in identities:
        r = api.post(users_url(service), {"Identity": identity, **fields})
        assert r.status_code == 201, r.text
        made.append(r.json())
    return made


def identities(api: Api, service: dict[str, Any], params: Any, **kw: Any) -> list[str]:
    return [u["identity"] for u in everything(api, service, params, **kw)]


def everything(api: Api, service: dict[str, Any], params: Any, page_size: int = 2,
               seen_urls: list[str] | None = None) -> list[dict[str, Any]]:
    """Every user of the filtered list, following next_page_url as a client does."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    r = api.get(users_url(service), params=[*pairs, ("PageSize", page_size)])
    found: list[dict[str, Any]] = []
    for _ in range(200):
        assert r.status_code == 200, r.text
        body = r.json()
        found += body["users"]
        nxt = body["meta"]["next_page_url"]
        if nxt is None:
            return found
        if seen_urls is not None:
            seen_urls.append(nxt)
        r = api.get(nxt)
    raise AssertionError("the list did not end")


def new_role(api: Api, service: dict[str, Any]) -> dict[str, Any]:
    r = api.post(f"/v2/Services/{service['sid']}/Roles",
                 {"FriendlyName": "mod", "Type": "deployment", "Permission": "editOwnUserInfo"})
    assert r.status_code == 201, r.text
    return r.json()


def set_updated(api: Api, sid: str, when: int) -> None:
    api.app.state.ctx.db.call(lambda conn: conn.execute(update(users).where(users.c.sid == sid)
                                                        .values(date_updated=when)))


# ---------------------------------------------------------------- each filter

def test_repeated_identity_is_any_of_them_in_creation_order(api: Api, service: dict[str, Any]) -> None:
    create(api, service, "carol", "alice", "bob", "dave")
    got = identities(api, service, [("Identity", "dave"), ("Identity", "alice"), ("Identity", "nobody"),
                                    ("Identity", "bob")])
    assert got == ["alice", "bob", "dave"]
    assert identities(api, service, {"Identity": "Alice"}) == []  # exact: case counts
    assert identities(api, service, {"Identity": "ali"}) == []


def test_identity_prefix_is_literal_and_case_sensitive_in_code_point_order(api: Api, service: dict[str, Any]) -> None:
    names = ["ab", "a%b", "a_b", "aXb", "Ab", "AB", "abc", "a", "b", "á", "a\u0301", "😀x", "😀", "😁", "日本語", "x%y"]
    create(api, service, *names)
    for prefix in ("a", "a%", "a_", "A", "ab", "á", "😀", "日本", "%", "_", "x%"):
        assert identities(api, service, {"IdentityPrefix": prefix}) == sorted(
            n for n in names if n.startswith(prefix)), prefix
    assert identities(api, service, {"IdentityPrefix": "a%"}) == ["a%b"]  # % is no wildcard
    assert identities(api, service, {"IdentityPrefix": "a_"}) == ["a_b"]  # nor is _


def test_role_sid_lists_that_role_only(api: Api, service: dict[str, Any]) -> None:
    role = new_role(api, service)
    create(api, service, "u1", "u2")
    create(api, service, "m1", "m2", "m3", RoleSid=role["sid"])
    create(api, service, "u3")
    assert identities(api, service, {"RoleSid": role["sid"]}) == ["m1", "m2", "m3"]
    assert identities(api, service, {"RoleSid": service["default_service_role_sid"]}) == ["u1", "u2", "u3"]
    other = api.new_service("other")  # a role of another service, well formed: no user of this one has it
    assert identities(api, service, {"RoleSid": other["default_service_role_sid"]}) == []


def test_updated_after_is_strictly_after_in_date_updated_then_sid_order(api: Api, service: dict[str, Any]) -> None:
    made = {u["identity"]: u["sid"] for u in create(api, service, *[f"u{i}" for i in range(9)])}
    dates = {"u0": T0 - 1, "u1": T0, "u2": T0 + 1, "u3": T0 + 1, "u4": T0 + 1, "u5": T0 + 1, "u6": T0 + 7,
             "u7": T0 + 7, "u8": T0 + 3}  # ties on T0 + 1 and T0 + 7
    for identity, when in dates.items():
        set_updated(api, made[identity], when)
    urls: list[str] = []
    got = everything(api, service, {"UpdatedAfter": iso8601(T0)}, page_size=2, seen_urls=urls)
    expected = sorted((when, made[i]) for i, when in dates.items() if when > T0)
    assert [(u["date_updated"], u["sid"]) for u in got] == [(iso8601(w), s) for w, s in expected]
    assert len(urls) == 3  # 7 users, 2 a page: the cursor crossed the ties
    for url in urls:
        query = parse_qs(urlsplit(url).query)
        assert query["UpdatedAfter"] == [iso8601(T0)] and query["PageToken"][0].startswith("PT")
    # An offset date means the same instant; a date without a zone is UTC (SPEC §1).
    assert [u["sid"] for u in everything(api, service, {"UpdatedAfter": "2023-11-14T23:13:20+01:00"})] == [
        s for _, s in expected]
    assert len(everything(api, service, {"UpdatedAfter": "2023-11-14T22:13:20"})) == 7


def test_an_update_moves_a_user_past_the_cursor_and_it_is_listed_again(api: Api, service: dict[str, Any]) -> None:
    made = {u["identity"]: u["sid"] for u in create(api, service, "p", "q", "r", "s")}
    for n, identity in enumerate("pqrs"):
        set_updated(api, made[identity], T0 + n)
    first = api.get(users_url(service), params={"UpdatedAfter": iso8601(T0 - 1), "PageSize": 2}).json()
    assert [u["identity"] for u in first["users"]] == ["p", "q"]
    # p (already seen) and r (not yet) change: both now sort after s, so the next pages give r, s, p.
    for identity in ("p", "r"):
        assert api.post(f"{users_url(service)}/{identity}", {"FriendlyName": "new"}).status_code == 200
    rest: list[str] = []
    url = first["meta"]["next_page_url"]
    while url:
        body = api.get(url).json()
        rest += [u["identity"] for u in body["users"]]
        url = body["meta"]["next_page_url"]
    assert rest[0] == "s" and sorted(rest[1:]) == ["p", "r"]  # p and r: same second, sid order
    assert len(rest) == 3


def test_filters_combine_with_and(api: Api, service: dict[str, Any]) -> None:
    role = new_role(api, service)
    made = {u["identity"]: u["sid"] for u in create(api, service, "ann", "anna", "bob")}
    made.update({u["identity"]: u["sid"] for u in create(api, service, "annie", "bea", RoleSid=role["sid"])})
    for identity in made:
        set_updated(api, made[identity], T0 + (5 if identity in ("anna", "annie", "bea") else 0))
    assert identities(api, service, {"IdentityPrefix": "ann", "RoleSid": role["sid"]}) == ["annie"]
    assert identities(api, service, {"IdentityPrefix": "ann", "UpdatedAfter": iso8601(T0)}) == sorted(
        ["anna", "annie"], key=lambda i: made[i])  # UpdatedAfter sets the order: same date, sid order
    assert identities(api, service, [("Identity", "ann"), ("Identity", "bea"), ("RoleSid", role["sid"])]) == ["bea"]
    assert identities(api, service, {"RoleSid": role["sid"], "UpdatedAfter": iso8601(T0 + 5)}) == []
    assert identities(api, service, [("Identity", "bob"), ("IdentityPrefix", "b"), ("Identity", "bea")]) == [
        "bea", "bob"]  # IdentityPrefix sets the order: identity order


def test_two_range_filters_together_read_off_the_event_loop(api: Api, service: dict[str, Any]) -> None:
    # One filter is one index range: a page's worth of rows, read inline (SQLite). Two together
    # check one range's rows against the other and may read many: a worker thread reads them.
    if not api.app.state.ctx.db.is_sqlite:
        pytest.skip("PostgreSQL reads on worker threads anyway")
    create(api, service, "t1", "t2")
    threads: list[int] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM users" in statement and "ORDER BY" in statement:
            threads.append(threading.get_ident())

    role = service["default_service_role_sid"]
    event.listen(api.app.state.ctx.db.engine, "before_cursor_execute", capture)
    try:
        seen = {}
        for name, params in (("one", {"IdentityPrefix": "t"}), ("other", {"RoleSid": role}),
                             ("two", {"IdentityPrefix": "t", "RoleSid": role}),
                             ("three", {"IdentityPrefix": "t", "RoleSid": role, "UpdatedAfter": "2000-01-01"})):
            threads.clear()
            got = api.get(users_url(service), params=params).json()["users"]
            assert sorted(u["identity"] for u in got) == ["t1", "t2"]
            seen[name] = set(threads)
    finally:
        event.remove(api.app.state.ctx.db.engine, "before_cursor_execute", capture)
    assert seen["one"] == seen["other"] and len(seen["one"]) == 1  # the loop's thread
    assert seen["two"] and seen["three"] and not (seen["two"] | seen["three"]) & seen["one"]


def test_previous_page_goes_back_in_the_filtered_order(api: Api, service: dict[str, Any]) -> None:
    create(api, service, "k5", "k1", "k4", "k2", "k3", "j")
    first = api.get(users_url(service), params={"IdentityPrefix": "k", "PageSize": 2}).json()
    second = api.get(first["meta"]["next_page_url"]).json()
    assert [u["identity"] for u in second["users"]] == ["k3", "k4"]
    back = api.get(second["meta"]["previous_page_url"]).json()
    assert [u["identity"] for u in back["users"]] == ["k1", "k2"]
    assert parse_qs(urlsplit(second["meta"]["previous_page_url"]).query)["IdentityPrefix"] == ["k"]
    assert parse_qs(urlsplit(first["meta"]["first_page_url"]).query)["IdentityPrefix"] == ["k"]


def test_a_cursor_of_another_order_is_an_invalid_page_token(api: Api, service: dict[str, Any]) -> None:
    create(api, service, "x1", "x2", "x3")
    plain = api.get(users_url(service), params={"PageSize": 1}).json()["meta"]["next_page_url"]
    token = parse_qs(urlsplit(plain).query)["PageToken"][0]
    for filters in ({"IdentityPrefix": "x"}, {"UpdatedAfter": "2000-01-01T00:00:00Z"}):
        r = api.get(users_url(service), params={**filters, "PageToken": token})
        assert_error(r, 400, 21481)
    # An identity cursor holding a 256-character identity still fits its bound.
    long = "é" * 256
    create(api, service, long, "é" * 255 + "f")
    page = api.get(users_url(service), params={"IdentityPrefix": "é", "PageSize": 1}).json()
    assert page["users"][0]["identity"] == "é" * 255 + "f"  # f (U+0066) before é (U+00E9)
    assert len(parse_qs(urlsplit(page["meta"]["next_page_url"]).query)["PageToken"][0]) > 128
    assert api.get(page["meta"]["next_page_url"]).json()["users"][0]["identity"] == long
    forged = Cursors(api.app.state.ctx.box, users_url(service), "identity").encode("n", "x")
    assert api.get(users_url(service), params={"PageToken": forged}).json()["code"] == 21481  # not of this order


# ---------------------------------------------------------------- who may filter, and bad values

@pytest.mark.parametrize("params", [
    {"Identity": "alice"}, {"IdentityPrefix": "a"}, {"RoleSid": "RL" + "0" * 32},
    {"UpdatedAfter": "2016-03-24T21:05:19Z"},
])
def test_a_client_token_may_not_filter(api: Api, service: dict[str, Any], params: dict[str, str]) -> None:
    headers = client_token(api, service, "alice")
    assert_error(api.client.get(users_url(service), params=params, headers=headers), 403, 20403)
    assert api.client.get(users_url(service), headers=headers).status_code == 200  # the plain list is still its


@pytest.mark.parametrize(("params", "word"), [
    ({"IdentityPrefix": ""}, "IdentityPrefix"),
    ({"IdentityPrefix": "x" * 257}, "IdentityPrefix"),
    ({"RoleSid": "RL123"}, "RoleSid"),
    ({"RoleSid": "rl" + "0" * 32}, "RoleSid"),
    ({"RoleSid": "US" + "0" * 32}, "RoleSid"),
    ({"RoleSid": ""}, "RoleSid"),
    ({"UpdatedAfter": "yesterday"}, "UpdatedAfter"),
    ({"UpdatedAfter": "2016-13-01T00:00:00Z"}, "UpdatedAfter"),
    ({"UpdatedAfter": ""}, "UpdatedAfter"),
    ({"UpdatedAfter": "99999-01-01T00:00:00Z"}, "UpdatedAfter"),
    ([("IdentityPrefix", "a"), ("IdentityPrefix", "b")], "IdentityPrefix"),
    ([("RoleSid", "RL" + "0" * 32), ("RoleSid", "RL" + "1" * 32)], "RoleSid"),
    ([("UpdatedAfter", "2016-03-24T21:05:19Z")] * 2, "UpdatedAfter"),
])
def test_bad_filter_values_are_400_20001_naming_the_parameter(api: Api, service: dict[str, Any], params: Any,
                                                              word: str) -> None:
    body = assert_error(api.get(users_url(service), params=params), 400, 20001)
    assert word in body["message"]


@pytest.mark.parametrize("raw", ["IdentityPrefix=a%00b", "Identity=%00", "IdentityPrefix=%ED%A0%80",
                                 "IdentityPrefix=%FF", "UpdatedAfter=%00"])
def test_nul_and_undecodable_filters_are_400_not_a_database_error(api: Api, service: dict[str, Any],
                                                                  raw: str) -> None:
    assert_error(api.get(f"{users_url(service)}?{raw}"), 400, 20001)


def test_a_prefix_of_256_characters_is_accepted(api: Api, service: dict[str, Any]) -> None:
    create(api, service, "y" * 256)
    assert identities(api, service, {"IdentityPrefix": "y" * 256}) == ["y" * 256]


def test_another_accounts_service_is_404_with_filters_too(api: Api, service: dict[str, Any]) -> None:
    sid, token = api.new_account()
    r = api.client.get(users_url(service), params={"IdentityPrefix": "a"}, auth=(sid, token))
    assert_error(r, 404, 20404)


def test_head_answers_the_filtered_get_without_a_body(api: Api, service: dict[str, Any]) -> None:
    create(api, service, "h1")
    get = api.get(users_url(service), params={"IdentityPrefix": "h"})
    head = api.client.head(users_url(service), params={"IdentityPrefix": "h"}, auth=api.auth)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert api.client.head(users_url(service), params={"RoleSid": "bad"}, auth=api.auth).status_code == 400


# ---------------------------------------------------------------- a real server, the twilio package

def test_the_twilio_package_follows_filtered_pages_of_a_real_server(server: Server) -> None:
    client = Client(server.account_sid, server.auth_token)
    client.chat.base_url = server.base
    svc = client.chat.v2.services.create(friendly_name="filters")
    users_api = client.chat.v2.services(svc.sid).users
    for identity in ("zed", "zoe%", "zoë", "Zoe", "zo_e", "amy"):
        users_api.create(identity=identity)
    # The package has no parameter for an extension filter: the first URL is ours, then it
    # follows next_page_url, which must keep the filter and the cursor.
    page = users_api.get_page(f"{server.base}/v2/Services/{svc.sid}/Users?IdentityPrefix=zo&PageSize=1")
    seen = []
    while page is not None:
        seen += [u.identity for u in page]
        page = page.next_page()
    assert seen == ["zo_e", "zoe%", "zoë"]
    # And raw HTTP: a client token is refused the filter on the served process too.
    with httpx.Client(base_url=server.base, auth=server.auth) as http:
        token = http.post(f"/v2/Services/{svc.sid}/Tokens", data={"Identity": "amy"}).json()["token"]
        r = http.get(f"/v2/Services/{svc.sid}/Users", params={"RoleSid": svc.default_service_role_sid},
                     headers={"X-Twilio-Token": token}, auth=None)
        assert r.status_code == 403 and r.json()["code"] == 20403
        assert [u.identity for u in users_api.list()] == ["zed", "zoe%", "zoë", "Zoe", "zo_e", "amy"]
