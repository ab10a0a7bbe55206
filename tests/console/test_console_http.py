"""The console's rules over plain HTTP (SPEC §11, §7): sessions and their cookies, CSRF, methods,
404 across accounts, errors as pages, and that every change goes through the API's use cases."""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import time
from html import unescape as html_unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import Api, assert_error, basic, database_url, start_server
from console_helpers import Console, csrf_of, set_cookies
from tokensvc.app import create_app
from tokensvc.config import Settings
from tokensvc.console.session import CHECK_SECONDS, COOKIE
from tokensvc.store.accounts import create_account, rotate_token
from tokensvc.store.console_signouts import record, signed_out
from webhook_receiver import serve


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # a small failure limit, so the shared Basic limits are reached quickly
    return Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys", auth_fail_limit=4)


@pytest.fixture
def console(api: Api) -> Console:
    return Console(api.client)


def signed_in(api: Api) -> Console:
    c = Console(api.client)
    r = c.sign_in(api.account_sid, api.auth_token)
    assert r.status_code == 303 and r.headers["location"] == "/console/services", (r.status_code, r.text[:300])
    return c


def new_user(api: Api, service_sid: str, identity: str, **fields: str) -> dict[str, Any]:
    r = api.post(f"/v2/Services/{service_sid}/Users", {"Identity": identity, **fields})
    assert r.status_code == 201, r.text
    return r.json()


# ---------------------------------------------------------------- signing in, sessions, cookies


def test_pages_send_a_visitor_without_a_session_to_the_sign_in_form(console: Console, service: dict) -> None:
    r = console.page(f"/console/services/{service['sid']}/users")
    assert r.status_code == 303
    assert r.headers["location"] == f"/console/sign-in?next=/console/services/{service['sid']}/users"
    assert console.page("/console").headers["location"] == "/console/sign-in"


def test_wrong_credentials_show_the_form_again_with_401_and_no_session(api: Api, console: Console) -> None:
    r = console.sign_in(api.account_sid, "not-the-token")
    assert r.status_code == 401
    assert "Wrong account SID or auth token" in r.text
    assert "www-authenticate" not in r.headers  # no browser Basic prompt
    assert COOKIE not in set_cookies(r)
    assert api.auth_token not in r.text
    assert console.page("/console/services").status_code == 303


def test_right_credentials_give_an_httponly_strict_console_cookie(api: Api, console: Console) -> None:
    form = console.http.get("/console/sign-in")
    pre = set_cookies(form)["tokensvc_console_signin"]
    assert pre["httponly"] and pre["samesite"].lower() == "strict" and pre["path"] == "/console"
    r = console.sign_in(api.account_sid, api.auth_token)
    assert r.status_code == 303 and r.headers["location"] == "/console/services"
    cookie = set_cookies(r)[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/console"
    assert "secure" not in cookie  # plain http here
    assert "max-age" not in cookie and "expires" not in cookie  # ends with the browser session at the latest
    for secret in (api.auth_token, api.account_sid):
        assert secret not in cookie["value"]  # the payload is base64: the SID is inside, but not in clear
    page = console.page("/console/services")
    assert page.status_code == 200 and api.account_sid in page.text


def test_the_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    settings = Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys",
                        public_url="https://chat.example.com")
    app = create_app(settings)
    made = app.state.ctx.db.call(lambda conn: create_account(conn))
    with TestClient(app, base_url="https://testserver") as client:
        r = Console(client).sign_in(made.sid, made.auth_token)
        assert r.status_code == 303
        assert set_cookies(r)[COOKIE]["secure"] is True


def test_secure_follows_x_forwarded_proto_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    """The scheme rule of every URL tokensvc returns (urls.base_url), on a real uvicorn."""
    for trusted, expect_secure in (("", False), ("127.0.0.1", True)):
        srv = start_server(tmp_path, extra_env={"TOKENSVC_TRUSTED_PROXIES": trusted}, name=f"proxy{trusted}")
        try:
            with httpx.Client(base_url=srv.base, headers={"X-Forwarded-Proto": "https"}, timeout=10) as http:
                form = http.get("/console/sign-in")
                pre = set_cookies(form)["tokensvc_console_signin"]
                assert ("secure" in pre) is expect_secure
                # sent back by hand: an http client keeps a Secure cookie to itself (a browser behind
                # the proxy speaks https)
                r = http.post("/console/sign-in", headers={"Cookie": f"tokensvc_console_signin={pre['value']}"},
                              data={"csrf_token": csrf_of(form.text), "account_sid": srv.account_sid,
                                    "auth_token": srv.auth_token})
                assert r.status_code == 303, r.text
                assert ("secure" in set_cookies(r)[COOKIE]) is expect_secure, (trusted, r.headers)
        finally:
            srv.stop()


def test_failed_sign_ins_share_the_basic_failure_limit(api: Api, console: Console) -> None:
    for _ in range(4):
        assert console.sign_in(api.account_sid, "wrong").status_code == 401
    r = console.sign_in(api.account_sid, api.auth_token)  # right, but this address is over the limit
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert COOKIE not in set_cookies(r)
    # the same limiter as Basic auth: the API refuses this address now too
    assert_error(api.get("/v2/Services"), 429, 20429)


def test_basic_failures_count_against_console_sign_in(api: Api, console: Console) -> None:
    for _ in range(4):
        assert_error(api.get("/v2/Services", auth=(api.account_sid, "wrong")), 401, 20003)
    assert console.sign_in(api.account_sid, api.auth_token).status_code == 429


def test_an_api_key_does_not_sign_in(api: Api, console: Console) -> None:
    key = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {"FriendlyName": "k"}).json()
    r = console.sign_in(key["sid"], key["secret"])
    assert r.status_code == 401 and "not an API key" in r.text
    assert COOKIE not in set_cookies(r)


def test_rotating_the_auth_token_ends_the_session(api: Api) -> None:
    c = signed_in(api)
    assert c.page("/console/services").status_code == 200
    ctx = api.app.state.ctx
    ctx.db.call(lambda conn: rotate_token(conn, sid=api.account_sid, box=ctx.box))
    ctx.auth.forget()  # this process's credential cache (others: within cache_seconds)
    assert c.page("/console/services").status_code == 303


def test_an_altered_or_foreign_cookie_is_no_session(api: Api, service: dict) -> None:
    c = signed_in(api)
    value = c.jar.get(COOKIE, path="/console")
    payload, mac = value.split(".")
    other_sid, _ = api.new_account()
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["a"] = other_sid
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode() + "." + mac
    for bad in (forged, payload + "." + mac[:-2] + "AA", "garbage", "x" * 2000):
        c.jar.set(COOKIE, bad, path="/console")
        assert c.page("/console/services").status_code == 303, bad[:40]


def test_sign_out_needs_the_csrf_token_and_ends_the_browser_session(api: Api) -> None:
    c = signed_in(api)
    r = c.post("/console/sign-out", {"csrf_token": "forged"})
    assert r.status_code == 403
    assert c.page("/console/services").status_code == 200  # still signed in
    r = c.post("/console/sign-out", {"csrf_token": c.csrf()})
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in?signed_out=1"
    gone = set_cookies(r)[COOKIE]
    assert gone["max-age"] == "0" and gone["path"] == "/console"
    assert c.page("/console/services").status_code == 303


def test_sign_out_ends_the_session_for_a_copy_of_its_cookie_too_on_every_replica(api: Api,
                                                                                 settings: Settings) -> None:
    c = signed_in(api)
    copied = c.jar.get(COOKIE, path="/console")
    other = signed_in(api)  # another session of the same account, in another browser
    with TestClient(create_app(settings), raise_server_exceptions=False) as replica_client:  # same database, keys
        here, there = Console(api.client), Console(replica_client)
        for thief in (here, there):
            thief.jar.set(COOKIE, copied, path="/console")
            assert thief.page("/console/services").status_code == 200  # the copy works, for now
        r = c.post("/console/sign-out", {"csrf_token": c.csrf()})
        assert r.status_code == 303 and r.headers["location"] == "/console/sign-in?signed_out=1"
        assert here.page("/console/services").status_code == 303  # on this process: at once
        deadline = time.monotonic() + CHECK_SECONDS + 2
        while there.page("/console/services").status_code != 303 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert there.page("/console/services").status_code == 303  # on the replica: within CHECK_SECONDS
    assert other.page("/console/services").status_code == 200  # only the session signed out of ends
    # signing out of it again (another tab, the copy) changes nothing and still answers the redirect
    r = here.post("/console/sign-out", {"csrf_token": "anything"})
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in?signed_out=1"


def test_sign_outs_are_kept_until_their_session_would_have_ended(api: Api) -> None:
    db = api.app.state.ctx.db
    now = int(time.time())
    old, kept, never = (secrets.token_hex(32) for _ in range(3))  # the suite's PostgreSQL is shared
    db.call(lambda conn: record(conn, nonce_hash=old, expires_at=now - 1, now=now - 10))
    db.call(lambda conn: record(conn, nonce_hash=kept, expires_at=now + 100, now=now))
    db.call(lambda conn: record(conn, nonce_hash=kept, expires_at=now + 100, now=now))  # twice: no error
    assert not db.call(lambda conn: signed_out(conn, nonce_hash=old))  # past its end: purged
    assert db.call(lambda conn: signed_out(conn, nonce_hash=kept))
    assert not db.call(lambda conn: signed_out(conn, nonce_hash=never))


def test_next_after_sign_in_stays_on_the_console(api: Api, service: dict) -> None:
    for evil in ("https://evil.example/", "//evil.example/console", "/v2/Services", "/console/../v2",
                 "/console/keys?x=https://evil.example"):
        r = Console(api.client).sign_in(api.account_sid, api.auth_token, next_path=evil)
        assert r.headers["location"] == "/console/services", evil
    wanted = f"/console/services/{service['sid']}/users"
    assert Console(api.client).sign_in(api.account_sid, api.auth_token, next_path=wanted).headers["location"] == wanted


# ---------------------------------------------------------------- CSRF


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_writes_nothing(api: Api, service: dict) -> None:
    user = new_user(api, service["sid"], "carol", FriendlyName="Carol")
    c = signed_in(api)
    path = f"/console/services/{service['sid']}/users/{user['sid']}"
    other = Api(api.client, *api.new_account(), api.app)
    foreign = Console(api.client)
    assert foreign.sign_in(other.account_sid, other.auth_token).status_code == 303
    another_sessions_token = foreign.csrf()
    for token in (None, "", "wrong", another_sessions_token):
        form = {"friendly_name": "Mallory", "attributes": "{}", "role_sid": user["role_sid"]}
        if token is not None:
            form["csrf_token"] = token
        r = c.post(f"{path}/edit", form)
        assert r.status_code == 403, (token, r.status_code)
        assert "security token" in r.text
        r = c.post(f"{path}/delete", {} if token is None else {"csrf_token": token})
        assert r.status_code == 403
    after = api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").json()
    assert after["friendly_name"] == "Carol" and after["date_updated"] == user["date_updated"]
    keys = api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json").json()["keys"]
    assert c.post("/console/keys", {"friendly_name": "k"}).status_code == 403
    assert api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json").json()["keys"] == keys


def test_the_sign_in_form_needs_its_csrf_token(api: Api, console: Console) -> None:
    console.sign_in_form()
    r = console.post("/console/sign-in", {"account_sid": api.account_sid, "auth_token": api.auth_token})
    assert r.status_code == 403 and COOKIE not in set_cookies(r)
    fresh = Console(api.client)  # a token from another browser's form
    r = fresh.post("/console/sign-in", {"csrf_token": console.sign_in_form(), "account_sid": api.account_sid,
                                        "auth_token": api.auth_token})
    assert r.status_code == 403 and COOKIE not in set_cookies(r)


def test_a_post_without_a_session_redirects_and_writes_nothing(api: Api, console: Console, service: dict) -> None:
    user = new_user(api, service["sid"], "dave")
    r = console.post(f"/console/services/{service['sid']}/users/{user['sid']}/delete", {"csrf_token": "x"})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
    assert api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").status_code == 200


# ---------------------------------------------------------------- methods, 404, errors


def _routes(service_sid: str, user_sid: str, key_sid: str) -> list[tuple[str, set[str]]]:
    s = f"/console/services/{service_sid}"
    return [
        ("/console", {"GET"}), ("/console/sign-in", {"GET", "POST"}), ("/console/sign-out", {"POST"}),
        ("/console/services", {"GET"}), (s, {"GET"}), (f"{s}/online", {"GET"}), (f"{s}/roles", {"GET"}),
        (f"{s}/users", {"GET"}), (f"{s}/users/{user_sid}", {"GET"}), (f"{s}/users/{user_sid}/edit", {"POST"}),
        (f"{s}/users/{user_sid}/delete", {"GET", "POST"}), ("/console/keys", {"GET", "POST"}),
        (f"/console/keys/{key_sid}/delete", {"GET", "POST"}), ("/console/signing-keys", {"GET"}),
        ("/console/signing-keys/rotate", {"POST"}), ("/console/static/console.css", {"GET"}),
    ]


def test_every_console_route_answers_its_methods_and_405_with_allow_otherwise(api: Api, service: dict) -> None:
    user = new_user(api, service["sid"], "erin")
    key = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {"FriendlyName": "k"}).json()
    c = signed_in(api)
    before = (api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").json(),
              api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json").json())
    for path, declared in _routes(service["sid"], user["sid"], key["sid"]):
        allowed = declared | ({"HEAD"} if "GET" in declared else set())
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"):
            if method in allowed:
                if method == "HEAD":
                    head, get = c.request("HEAD", path), c.page(path)
                    assert head.status_code == get.status_code and head.content == b"", path
                continue
            r = c.request(method, path)
            assert r.status_code == 405, (method, path, r.status_code)
            assert set(r.headers["allow"].replace(" ", "").split(",")) == allowed, (method, path)
            if method != "HEAD":
                assert r.headers["content-type"].startswith("text/html"), (method, path)
    after = (api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").json(),
             api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json").json())
    assert after == before
    assert c.page("/console/services").status_code == 200  # still signed in: nothing signed us out


def test_unknown_console_paths_are_html_404_and_the_api_keeps_json(api: Api) -> None:
    c = signed_in(api)
    r = c.page("/console/no/such/page")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in r.text
    assert_error(api.client.get("/v2/NoSuchThing"), 404, 20404)  # the API's errors stay JSON
    r = c.page("/console/static/nope.css")
    assert r.status_code == 404


def test_one_account_never_sees_another_accounts_service_user_or_key(api: Api, service: dict) -> None:
    user = new_user(api, service["sid"], "frank@example.com", FriendlyName="Frank")
    key = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {"FriendlyName": "k"}).json()
    other_sid, other_token = api.new_account()
    intruder = Console(api.client)
    assert intruder.sign_in(other_sid, other_token).status_code == 303
    token = intruder.csrf()
    s = f"/console/services/{service['sid']}"
    for path in (s, f"{s}/users", f"{s}/roles", f"{s}/online", f"{s}/users/{user['sid']}",
                 f"{s}/users/{user['sid']}/delete", f"/console/keys/{key['sid']}/delete"):
        r = intruder.page(path)
        assert r.status_code == 404, (path, r.status_code)
        assert "frank" not in r.text.lower()
    for path, form in ((f"{s}/users/{user['sid']}/edit", {"friendly_name": "x", "attributes": "{}", "role_sid": ""}),
                       (f"{s}/users/{user['sid']}/delete", {}), (f"/console/keys/{key['sid']}/delete", {})):
        assert intruder.post(path, {**form, "csrf_token": token}).status_code == 404, path
    assert api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").json()["friendly_name"] == "Frank"
    assert api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys/{key['sid']}.json").status_code == 200
    listing = intruder.page("/console/services").text
    assert service["sid"] not in listing


def test_use_case_errors_are_shown_on_the_page_with_their_status(api: Api, service: dict) -> None:
    user = new_user(api, service["sid"], "gina", Attributes='{"a": 1}')
    c = signed_in(api)
    path = f"/console/services/{service['sid']}/users/{user['sid']}"
    token = c.csrf(path)
    cases = [({"attributes": "{not json"}, 400, "(error 50304)"),
             ({"attributes": '{"x": "' + "y" * 17000 + '"}'}, 400, "(error 50303)"),
             ({"friendly_name": "n" * 257}, 400, "(error 50003)"),
             ({"role_sid": "RL" + "0" * 32}, 400, "(error 50102)"),
             ({"role_sid": ""}, 400, "(error 50102)")]
    for change, status, words in cases:
        form = {"csrf_token": token, "friendly_name": "", "attributes": '{"a": 1}', "role_sid": user["role_sid"],
                **change}
        r = c.post(f"{path}/edit", form)
        assert r.status_code == status, (change.keys(), r.status_code)
        alert = re.search(r'role="alert">([^<]+)<', r.text)
        assert alert and words in alert.group(1), (change.keys(), alert and alert.group(1))
    after = api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").json()
    assert after == user
    # a malformed paging value is the API's 400, as a page
    r = c.page(f"/console/services/{service['sid']}/users?PageSize=abc")
    assert r.status_code == 400 and "error 20001" in r.text and "PageSize" in r.text
    r = c.page(f"/console/services/{service['sid']}/users?PageToken=PTforged")
    assert r.status_code == 400 and "error 21481" in r.text
    # an API cursor is not a console cursor (each is sealed to its own list)
    api_page = api.get(f"/v2/Services/{service['sid']}/Users?PageSize=1").json()
    if api_page["meta"]["next_page_url"]:
        token = api_page["meta"]["next_page_url"].split("PageToken=")[1]
        assert c.page(f"/console/services/{service['sid']}/users?PageToken={token}").status_code == 400


# ---------------------------------------------------------------- what the pages do


def test_edit_goes_through_update_user_and_shows_the_result(api: Api, service: dict) -> None:
    user = new_user(api, service["sid"], "hugo")
    roles = api.get(f"/v2/Services/{service['sid']}/Roles").json()["roles"]
    admin_role = next(r for r in roles if r["friendly_name"] == "service admin")
    c = signed_in(api)
    path = f"/console/services/{service['sid']}/users/{user['sid']}"
    r = c.post(f"{path}/edit", {"csrf_token": c.csrf(path), "friendly_name": "Hugo", "role_sid": admin_role["sid"],
                                "attributes": '{\r\n  "team": "blue"\r\n}'})
    assert r.status_code == 303 and r.headers["location"] == f"{path}?saved=1"
    after = api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").json()
    assert (after["friendly_name"], after["role_sid"]) == ("Hugo", admin_role["sid"])
    assert after["attributes"] == '{\n  "team": "blue"\n}'
    page = c.page(r.headers["location"])
    assert "Changes saved." in page.text and "Hugo" in page.text
    # the same values again: nothing to write
    r = c.post(f"{path}/edit", {"csrf_token": c.csrf(path), "friendly_name": "Hugo", "role_sid": admin_role["sid"],
                                "attributes": '{\n  "team": "blue"\n}'})
    assert r.headers["location"] == f"{path}?saved=0"
    assert api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").json()["date_updated"] == after["date_updated"]


def test_console_changes_post_their_webhooks_as_api_calls(api: Api, service: dict) -> None:
    """The use cases' events apply (SPEC §10): an edit posts onUserUpdated and a deletion
    onUserRemoved, Source=API. (Their signatures are the webhooks' tests': on the suite's shared
    PostgreSQL database another test's server, with a secrets.key of its own, may deliver a row
    first, unsigned, as SPEC §10 lets any replica.)"""
    receiver_gen = serve()
    receiver = next(receiver_gen)
    try:
        r = api.post(f"/v2/Services/{service['sid']}", {"PostWebhookUrl": receiver.url,
                                                         "WebhookFilters": ["onUserUpdated", "onUserRemoved"]})
        assert r.status_code == 200, r.text
        user = new_user(api, service["sid"], "kim")
        c = signed_in(api)
        path = f"/console/services/{service['sid']}/users/{user['sid']}"
        assert c.post(f"{path}/edit", {"csrf_token": c.csrf(path), "friendly_name": "Kim", "attributes": "{}",
                                       "role_sid": user["role_sid"]}).status_code == 303
        [updated] = receiver.wait(1, EventType="onUserUpdated")
        assert updated.params["FriendlyName"] == "Kim" and updated.params["Source"] == "API"
        assert "ClientIdentity" not in updated.params
        assert c.post(f"{path}/delete", {"csrf_token": c.csrf(path)}).status_code == 303
        [removed] = receiver.wait(1, EventType="onUserRemoved")
        assert removed.params["UserSid"] == user["sid"] and removed.params["Source"] == "API"
        assert updated.headers["i-twilio-idempotency-token"] != removed.headers["i-twilio-idempotency-token"]
    finally:
        receiver_gen.close()


def test_delete_asks_first_then_deletes_through_delete_user(api: Api, service: dict) -> None:
    user = new_user(api, service["sid"], "ivy@example.com")
    c = signed_in(api)
    path = f"/console/services/{service['sid']}/users/{user['sid']}/delete"
    confirm = c.page(path)
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    assert api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}").status_code == 200  # asking deletes nothing
    r = c.post(path, {"csrf_token": csrf_of(confirm.text)})
    assert r.status_code == 303 and r.headers["location"] == f"/console/services/{service['sid']}/users?deleted=1"
    assert_error(api.get(f"/v2/Services/{service['sid']}/Users/{user['sid']}"), 404, 20404)
    assert c.post(path, {"csrf_token": csrf_of(confirm.text)}).status_code == 404  # gone: a 404 page


def test_users_list_pages_by_keyset_and_every_user_appears_once(api: Api, service: dict) -> None:
    for i in range(57):
        new_user(api, service["sid"], f"u{i:02d}")
    c = signed_in(api)
    seen: list[str] = []
    url: str | None = f"/console/services/{service['sid']}/users"
    pages = 0
    while url:
        r = c.page(url)
        assert r.status_code == 200
        seen += re.findall(r'/users/US[0-9a-f]{32}">([^<]+)</a>', r.text)
        nxt = re.search(r'href="([^"]+)" rel="next"', r.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        pages += 1
    assert pages == 2
    assert seen == [f"u{i:02d}" for i in range(57)]


def test_search_by_identity_prefix_is_literal_case_sensitive_and_paged(api: Api, service: dict) -> None:
    tricky = ["ab-%", "ab_1", "abc", "Abc", "abd", "a%c", "xyz"]
    paged = [f"pre-{i:02d}" for i in range(55)]
    for identity in tricky + paged[::-1]:  # created in reverse: the search's order is the identity's
        new_user(api, service["sid"], identity)
    c = signed_in(api)
    base = f"/console/services/{service['sid']}/users"

    def names(url: str) -> tuple[list[str], str | None]:
        r = c.page(url)
        assert r.status_code == 200, (url, r.text[:300])
        nxt = re.search(r'href="([^"]+)" rel="next"', r.text)
        return ([html_unescape(n) for n in re.findall(r'/users/US[0-9a-f]{32}">([^<]+)</a>', r.text)],
                nxt.group(1).replace("&amp;", "&") if nxt else None)

    for prefix, expected in (("ab", ["ab-%", "ab_1", "abc", "abd"]), ("ab-%", ["ab-%"]), ("a%", ["a%c"]),
                             ("A", ["Abc"]), ("ab_", ["ab_1"]), ("zz", [])):
        found, nxt = names(f"{base}?{urlencode({'prefix': prefix})}")
        assert (found, nxt) == (expected, None), prefix
    first, nxt = names(f"{base}?prefix=pre-")
    assert first == paged[:50] and nxt is not None and "prefix=pre-" in nxt and "PageToken=PT" in nxt
    rest, last = names(nxt)
    assert rest == paged[50:] and last is None
    # a cursor of the unfiltered list (creation order) is no cursor of the search (identity order)
    plain_next = re.search(r'href="([^"]+)" rel="next"', c.page(base).text).group(1).replace("&amp;", "&")
    token = plain_next.split("PageToken=")[1].split("&")[0]
    r = c.page(f"{base}?prefix=pre-&PageToken={token}")
    assert r.status_code == 400 and "error 21481" in r.text
    r = c.page(f"{base}?prefix=" + "p" * 257)
    assert r.status_code == 400 and "(error 20001)" in r.text


def test_api_key_secret_is_shown_once_and_works(api: Api) -> None:
    c = signed_in(api)
    r = c.post("/console/keys", {"csrf_token": c.csrf("/console/keys"), "friendly_name": "deploy"})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    sid = re.search(r"<code>(SK[0-9a-f]{32})</code>", r.text).group(1)
    secret = re.search(r'id="secret" class="secret" type="text" value="([^"]+)"', r.text).group(1)
    assert api.client.get("/v2/Services", headers=basic(sid, secret)).status_code == 200
    listing = c.page("/console/keys")
    assert sid in listing.text and secret not in listing.text
    confirm = c.page(f"/console/keys/{sid}/delete")
    assert secret not in confirm.text
    r = c.post(f"/console/keys/{sid}/delete", {"csrf_token": csrf_of(confirm.text)})
    assert r.status_code == 303
    assert_error(api.client.get("/v2/Services", headers=basic(sid, secret)), 401, 20003)


def test_signing_keys_rotate_only_for_the_deployments_account(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys"))
    made = app.state.ctx.db.call(lambda conn: create_account(conn))
    operator_app = create_app(Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys",
                                       account_sid=made.sid))
    other = app.state.ctx.db.call(lambda conn: create_account(conn))
    with TestClient(operator_app) as client, TestClient(operator_app) as stranger_client:
        jwks = client.get("/.well-known/jwks.json").json()["keys"]
        stranger = Console(stranger_client)
        assert stranger.sign_in(other.sid, other.auth_token).status_code == 303
        page = stranger.page("/console/signing-keys")
        assert page.status_code == 200 and "Rotate the signing key" not in page.text
        assert stranger.post("/console/signing-keys/rotate", {"csrf_token": csrf_of(page.text)}).status_code == 403
        assert client.get("/.well-known/jwks.json").json()["keys"] == jwks
        operator = Console(client)
        assert operator.sign_in(made.sid, made.auth_token).status_code == 303
        page = operator.page("/console/signing-keys")
        r = operator.post("/console/signing-keys/rotate", {"csrf_token": csrf_of(page.text)})
        assert r.status_code == 303
        kid = r.headers["location"].split("rotated=")[1]
        page = operator.page(r.headers["location"])
        assert f"new tokens are signed with {kid}" in page.text
        assert re.search(rf"<code>{re.escape(kid)}</code></td><td>active", page.text)
        after = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
        assert after == {k["kid"] for k in jwks} | {kid}  # the old key still verifies
        # a made-up kid in the query is not announced
        assert "new tokens are signed" not in operator.page("/console/signing-keys?rotated=bogus").text


def test_online_count_is_json_and_needs_a_session(api: Api, service: dict) -> None:
    path = f"/console/services/{service['sid']}/online"
    assert_error(api.client.get(path), 401, 20003)
    c = signed_in(api)
    r = c.page(path)
    assert r.status_code == 200 and r.json() == {"online": 0}
    page = c.page(f"/console/services/{service['sid']}")
    assert 'id="online-count"' in page.text and f'data-src="{path}"' in page.text


def test_pages_carry_security_headers_and_load_nothing_from_elsewhere(api: Api, service: dict) -> None:
    new_user(api, service["sid"], "jo")
    assert Console(api.client).page("/console/sign-in").headers["x-frame-options"] == "DENY"
    c = signed_in(api)
    for path in ("/console/services", f"/console/services/{service['sid']}",
                 f"/console/services/{service['sid']}/users", "/console/keys", "/console/signing-keys"):
        r = c.page(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
        assert '<html lang="en">' in r.text and "<title>" in r.text
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', r.text):
            assert url.startswith(("/console", "#")), (path, url)
        assert "<style" not in r.text and "style=" not in r.text and "<script>" not in r.text


def test_what_users_wrote_is_escaped_never_markup(api: Api, service: dict) -> None:
    evil = '<script>alert(1)</script>"x'
    user = new_user(api, service["sid"], evil, FriendlyName='<img src=x onerror=alert(2)>',
                    Attributes='{"a": "</pre><script>alert(3)</script>"}')
    c = signed_in(api)
    for path in (f"/console/services/{service['sid']}/users", f"/console/services/{service['sid']}/users/{user['sid']}",
                 f"/console/services/{service['sid']}/users?{urlencode({'prefix': '<script>'})}"):
        r = c.page(path)
        assert r.status_code == 200, path
        assert "<script>" not in r.text and "<img" not in r.text, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;x" in c.page(
        f"/console/services/{service['sid']}/users/{user['sid']}").text


def test_no_identity_attribute_or_secret_reaches_a_log_line(api: Api, service: dict,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    identity, attributes = "secret-person@example.com", '{"ssn": "078-05-1120"}'
    with caplog.at_level(logging.DEBUG):
        user = new_user(api, service["sid"], identity)
        c = signed_in(api)
        path = f"/console/services/{service['sid']}/users/{user['sid']}"
        c.page(f"/console/services/{service['sid']}/users?prefix=secret-per")
        c.post(f"{path}/edit", {"csrf_token": c.csrf(path), "friendly_name": "Hidden Name",
                                "attributes": attributes, "role_sid": user["role_sid"]})
        c.post("/console/keys", {"csrf_token": c.csrf("/console/keys")})
        c.post(f"{path}/delete", {"csrf_token": c.csrf(path)})
        Console(api.client).sign_in(api.account_sid, "wrong-token-guess")
    ours = [r for r in caplog.records if r.name.startswith("tokensvc")]  # not the test client's own (httpx)
    text = "\n".join(f"{r.getMessage()} {r.args}" for r in ours)
    assert any(r.name == "tokensvc.access" for r in ours)  # the access log did log
    for secret in (identity, "secret-per", "078-05-1120", "Hidden Name", api.auth_token, "wrong-token-guess"):
        assert secret not in text, secret
