"""Errors (SPEC §2), accounts isolation, and malformed input that must never be a 5xx."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException

from blackbox.blackbox_helpers import (
    BB,
    assert_error,
    assert_not_5xx,
    bb,  # noqa: F401  (the server fixture, module-scoped)
)

# This module provokes many failed logins on purpose: its own server, with the failed-login limit
# (README: TOKENSVC_AUTH_FAIL_LIMIT, 20 per 60 s by default) out of the way; test_bb_limits covers it.
OWN_SERVER = True
SERVER_ENV = {"TOKENSVC_AUTH_FAIL_LIMIT": "100000"}


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    return bb.new_service("errors")


@pytest.fixture(scope="module")
def other(bb: BB) -> tuple[str, str]:
    """A second account made with `tokensvc accounts create` on the server's database."""
    return bb.new_account()


def assert_401(r: httpx.Response) -> None:
    assert_error(r, 401, 20003)
    assert r.headers.get("www-authenticate") == 'Basic realm="tokensvc"', dict(r.headers)


# --- credentials ----------------------------------------------------------------------------


def test_missing_credentials_is_401_20003(bb: BB, svc: dict[str, Any]) -> None:
    anon = bb.client()
    assert_401(anon.get("/v2/Services"))
    assert_401(anon.post("/v2/Services", data={"FriendlyName": "x"}))
    assert_401(anon.get(f"/v2/Services/{svc['sid']}/Users"))
    assert_401(anon.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "x"}))
    assert_401(anon.get(f"/2010-04-01/Accounts/{bb.account_sid}/Keys.json"))


@pytest.mark.parametrize("header", [
    "Basic " + base64.b64encode(b"AC00000000000000000000000000000000:nope").decode(),
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic " + base64.b64encode(b":").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "Basic",
    "Bearer abc.def.ghi",
    "Digest username=x",
    "",
])
def test_malformed_or_unknown_credentials_are_401_20003(bb: BB, header: str) -> None:
    r = bb.client().get("/v2/Services", headers={"Authorization": header})
    assert_401(r)


def test_wrong_auth_token_is_401_20003(bb: BB) -> None:
    assert_401(bb.client(auth=(bb.account_sid, "wrong-token")).get("/v2/Services"))
    assert_401(bb.client(auth=(bb.account_sid, "")).get("/v2/Services"))
    assert_401(bb.client(auth=(bb.account_sid, bb.auth[1] + "x")).get("/v2/Services"))


def test_second_accounts_token_with_first_accounts_sid_is_401(bb: BB, other: tuple[str, str]) -> None:
    assert_401(bb.client(auth=(bb.account_sid, other[1])).get("/v2/Services"))


def test_wrong_credentials_through_twilio_package(bb: BB) -> None:
    client = bb.twilio(bb.account_sid, "definitely-wrong")
    with pytest.raises(TwilioRestException) as e:
        client.chat.v2.services.create(friendly_name="nope")
    assert e.value.status == 401 and e.value.code == 20003


# --- routes and methods ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v2/Nope", "/v2/Services/x/Nope", "/v3/Services", "/v2/services",
                                  "/2010-04-01/Accounts/AC00000000000000000000000000000000/Nope.json"])
def test_unknown_route_is_404_20404(bb: BB, path: str) -> None:
    assert_error(bb.http.get(path), 404, 20404)


@pytest.mark.parametrize("path", ["/v2/Services/", "/v2/Services/{IS}/", "/v2/Services/{IS}/Users/"])
def test_trailing_slash_is_a_json_404_not_a_redirect(bb: BB, svc: dict[str, Any], path: str) -> None:
    # SPEC §1: every response body is JSON; the Twilio API has no trailing-slash routes.
    assert_error(bb.http.get(path.replace("{IS}", svc["sid"])), 404, 20404)


@pytest.mark.parametrize("method, path", [
    ("DELETE", "/v2/Services"),
    ("PUT", "/v2/Services"),
    ("PATCH", "/v2/Services/{IS}"),
    ("PUT", "/v2/Services/{IS}/Users/someone"),
    ("DELETE", "/v2/Services/{IS}/Users"),
    ("DELETE", "/v2/Services/{IS}/Roles"),
    ("GET", "/v2/Services/{IS}/Tokens"),
    ("PUT", "/v2/Services/{IS}/Tokens"),
    ("PUT", "/2010-04-01/Accounts/{AC}/Keys.json"),
    ("DELETE", "/2010-04-01/Accounts/{AC}/Keys.json"),
])
def test_wrong_method_is_405_20004(bb: BB, svc: dict[str, Any], method: str, path: str) -> None:
    r = bb.http.request(method, path.replace("{IS}", svc["sid"]).replace("{AC}", bb.account_sid))
    assert_error(r, 405, 20004)


def test_error_bodies_are_exactly_the_four_keys(bb: BB, svc: dict[str, Any]) -> None:
    for r in (
        bb.http.get("/nope"),
        bb.http.delete("/v2/Services"),
        bb.http.post(f"/v2/Services/{svc['sid']}/Users", data={}),
        bb.client().get("/v2/Services"),
    ):
        assert_error(r, r.status_code)
        assert set(r.json()) == {"code", "message", "more_info", "status"}


def test_twilio_package_exceptions_carry_codes(bb: BB, svc: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(svc["sid"]).users
    users.create(identity="exc-dup")
    cases = [
        (lambda: users("exc-missing").fetch(), 404, 20404),
        (lambda: users.create(identity="exc-dup"), 409, 50201),
        (lambda: users.create(identity="x" * 300), 400, 50207),
        (lambda: users.create(identity="exc-attrs", attributes="{bad"), 400, 50304),
        (lambda: users.create(identity="exc-role", role_sid="RLbad"), 400, 50102),
    ]
    for call, status, code in cases:
        with pytest.raises(TwilioRestException) as e:
            call()
        assert (e.value.status, e.value.code) == (status, code), e.value.msg
        assert e.value.msg


# --- accounts isolation ---------------------------------------------------------------------


def test_second_account_sees_nothing_of_the_first(bb: BB, svc: dict[str, Any], other: tuple[str, str]) -> None:
    user = bb.new_user(svc["sid"], "mine")
    role = bb.roles(svc["sid"])["service user"]["sid"]
    o = bb.client(auth=other)
    base = f"/v2/Services/{svc['sid']}"
    assert_error(o.get(base), 404, 20404)
    assert_error(o.post(base, data={"FriendlyName": "stolen"}), 404, 20404)
    assert_error(o.delete(base), 404, 20404)
    assert_error(o.get(f"{base}/Users"), 404, 20404)
    assert_error(o.get(f"{base}/Users/{user['sid']}"), 404, 20404)
    assert_error(o.get(f"{base}/Users/mine"), 404, 20404)
    assert_error(o.post(f"{base}/Users", data={"Identity": "intruder"}), 404, 20404)
    assert_error(o.post(f"{base}/Users/mine", data={"FriendlyName": "x"}), 404, 20404)
    assert_error(o.delete(f"{base}/Users/mine"), 404, 20404)
    assert_error(o.get(f"{base}/Roles"), 404, 20404)
    assert_error(o.get(f"{base}/Roles/{role}"), 404, 20404)
    assert_error(o.post(f"{base}/Tokens", data={"Identity": "intruder"}), 404, 20404)
    listed = o.get("/v2/Services").json()["services"]
    assert svc["sid"] not in [s["sid"] for s in listed]
    # Nothing was changed by the other account.
    assert bb.http.get(base).json()["friendly_name"] == "errors"
    assert bb.http.get(f"{base}/Users/mine").json()["friendly_name"] is None
    assert_error(bb.http.get(f"{base}/Users/intruder"), 404, 20404)


def test_second_account_works_through_twilio_package(bb: BB, svc: dict[str, Any], other: tuple[str, str]) -> None:
    client = bb.twilio(*other)
    mine = client.chat.v2.services.create(friendly_name="other's")
    assert mine.account_sid == other[0]
    assert [s.sid for s in client.chat.v2.services.list()] == [mine.sid]
    with pytest.raises(TwilioRestException) as e:
        client.chat.v2.services(svc["sid"]).fetch()
    assert e.value.status == 404 and e.value.code == 20404
    # And the first account cannot see the second's.
    assert_error(bb.http.get(f"/v2/Services/{mine.sid}"), 404, 20404)


def test_api_key_of_another_account_sees_nothing_of_the_first(bb: BB, svc: dict[str, Any],
                                                              other: tuple[str, str]) -> None:
    r = bb.http.post(f"/2010-04-01/Accounts/{other[0]}/Keys.json", data={"FriendlyName": "theirs"}, auth=other)
    assert r.status_code == 201, r.text
    key = (r.json()["sid"], r.json()["secret"])
    k = bb.client(auth=key)
    assert_error(k.get(f"/v2/Services/{svc['sid']}"), 404, 20404)
    assert_error(k.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "intruder"}), 404, 20404)
    assert_error(k.get(f"/v2/Services/{svc['sid']}/Users"), 404, 20404)
    assert svc["sid"] not in [s["sid"] for s in k.get("/v2/Services").json()["services"]]


def test_api_keys_of_another_account_are_404(bb: BB, other: tuple[str, str]) -> None:
    key = bb.new_api_key("first's")
    o = bb.client(auth=other)
    assert_error(o.get(f"/2010-04-01/Accounts/{bb.account_sid}/Keys/{key['sid']}.json"), 404, 20404)
    assert_error(o.get(f"/2010-04-01/Accounts/{other[0]}/Keys/{key['sid']}.json"), 404, 20404)
    assert_error(o.delete(f"/2010-04-01/Accounts/{other[0]}/Keys/{key['sid']}.json"), 404, 20404)
    r = o.get(f"/2010-04-01/Accounts/{bb.account_sid}/Keys.json")
    assert r.status_code in (401, 403, 404), r.text
    assert_error(r, r.status_code)
    assert bb.http.get(f"/2010-04-01/Accounts/{bb.account_sid}/Keys/{key['sid']}.json").status_code == 200


# --- malformed input never 5xx --------------------------------------------------------------


def form_post(bb: BB, url: str, body: bytes, ctype: str = "application/x-www-form-urlencoded") -> httpx.Response:
    return bb.http.post(url, content=body, headers={"Content-Type": ctype})


@pytest.mark.parametrize("body", [
    b"Identity=%ff%fe%fd",
    b"Identity=\xff\xfe\xfd",
    b"Identity=ok-\xc3&FriendlyName=\xe2\x82",
    b"Identity=x&Attributes=%7B%22a%22%3A%22\xff%22%7D",
    b"\xff\xff=\xff",
    b"Identity",
    b"=&&&==",
    b"Identity=a%",
    b"Identity=a%zz",
])
def test_invalid_utf8_and_broken_form_bodies_never_5xx(bb: BB, svc: dict[str, Any], body: bytes) -> None:
    assert_not_5xx(form_post(bb, f"/v2/Services/{svc['sid']}/Users", body))
    assert_not_5xx(form_post(bb, f"/v2/Services/{svc['sid']}/Tokens", body))
    assert_not_5xx(form_post(bb, "/v2/Services", body.replace(b"Identity", b"FriendlyName")))


def test_one_megabyte_attributes_is_4xx(bb: BB, svc: dict[str, Any]) -> None:
    attrs = json.dumps({"blob": "z" * (1024 * 1024)})
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Users", data={"Identity": "big-attrs", "Attributes": attrs})
    assert 400 <= r.status_code < 500, r.status_code
    assert_error(r, r.status_code)
    assert_error(bb.http.get(f"/v2/Services/{svc['sid']}/Users/big-attrs"), 404, 20404)


def test_json_body_instead_of_form_never_5xx(bb: BB, svc: dict[str, Any]) -> None:
    for url, payload in ((f"/v2/Services/{svc['sid']}/Users", {"Identity": "json-user"}),
                         ("/v2/Services", {"FriendlyName": "json-svc"}),
                         (f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "json-user"})):
        r = bb.http.post(url, json=payload)
        assert_not_5xx(r)
        r = form_post(bb, url, b'{"Identity": ', "application/json")
        assert_not_5xx(r)
        r = form_post(bb, url, b"[1,2,3]", "application/json")
        assert_not_5xx(r)


def test_json_body_instead_of_form_is_missing_parameter(bb: BB, svc: dict[str, Any]) -> None:
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Users", json={"Identity": "json-user-2"})
    assert_error(r, 400, 20001)


@pytest.mark.parametrize("identity", ["a\x00b", "\x00", "nul\x00", "\x00" * 300])
def test_nul_bytes_in_identity_never_5xx(bb: BB, svc: dict[str, Any], identity: str) -> None:
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Users", data={"Identity": identity})
    assert_not_5xx(r)
    r = bb.http.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": identity})
    assert_not_5xx(r)
    r = bb.http.get(f"/v2/Services/{svc['sid']}/Users/" + identity.replace("\x00", "%00"))
    assert_not_5xx(r)


@pytest.mark.parametrize("value", ["\x00", "x\x00y", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")])
def test_nul_and_odd_bytes_in_other_fields_never_5xx(bb: BB, svc: dict[str, Any], value: str) -> None:
    url = f"/v2/Services/{svc['sid']}/Users"
    for field in ("FriendlyName", "Attributes", "RoleSid"):
        assert_not_5xx(bb.http.post(url, data={"Identity": f"odd-{uuid.uuid4().hex[:8]}", field: value}))
    assert_not_5xx(bb.http.post("/v2/Services", data={"FriendlyName": value}))
    assert_not_5xx(bb.http.post(f"/v2/Services/{svc['sid']}", data={"DefaultServiceRoleSid": value}))


@pytest.mark.parametrize("path", ["/v2/Services/%ff%fe", "/v2/Services/{IS}/Users/%ff%fe",
                                  "/v2/Services/{IS}/Users/%00", "/v2/Services/{IS}/Users/" + "x" * 8000,
                                  "/v2/Services/{IS}/Users/%",
                                  "/v2/Services/{IS}/Users/%2e%2e", "/v2/Services/{IS}/Roles/%ff",
                                  "/2010-04-01/Accounts/%ff/Keys.json"])
def test_odd_paths_never_5xx(bb: BB, svc: dict[str, Any], path: str) -> None:
    r = bb.http.get(path.replace("{IS}", svc["sid"]))
    assert_not_5xx(r)


def test_odd_query_strings_never_5xx(bb: BB, svc: dict[str, Any]) -> None:
    url = f"/v2/Services/{svc['sid']}/Users"
    for qs in ("PageSize=%ff", "PageToken=%ff%fe", "PageSize=1&PageSize=2", "PageToken=&PageSize=",
               "Page=%00", "%ff=%ff"):
        assert_not_5xx(bb.http.get(f"{url}?{qs}"))


def test_unexpected_content_types_never_5xx(bb: BB, svc: dict[str, Any]) -> None:
    url = f"/v2/Services/{svc['sid']}/Users"
    for ctype, body in (("text/plain", b"Identity=plain"), ("multipart/form-data", b"garbage"),
                        ("multipart/form-data; boundary=x", b"--x\r\nbroken"), ("", b"Identity=none"),
                        ("application/x-www-form-urlencoded; charset=latin-1", b"Identity=l\xe4tin")):
        assert_not_5xx(form_post(bb, url, body, ctype))


def test_repeated_scalar_parameters_never_5xx(bb: BB, svc: dict[str, Any]) -> None:
    r = form_post(bb, f"/v2/Services/{svc['sid']}/Users",
                  b"Identity=rep-a&Identity=rep-b&FriendlyName=a&FriendlyName=b")
    assert_not_5xx(r)


def test_mixed_concurrent_writes_never_5xx(bb: BB) -> None:
    """SQLite under concurrent writers must queue, not fail ("database is locked" would be a 500)."""
    from concurrent.futures import ThreadPoolExecutor

    svc = bb.new_service("stress")
    base = f"/v2/Services/{svc['sid']}"

    def work(i: int) -> list[httpx.Response]:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as c:
            ident = f"stress-{i}"
            out = [c.post(f"{base}/Users", data={"Identity": ident, "Attributes": json.dumps({"i": i})})]
            out.append(c.post(f"{base}/Users/{ident}", data={"FriendlyName": f"n{i}"}))
            out.append(c.post(f"{base}/Tokens", data={"Identity": f"tok-{i % 5}"}))
            out.append(c.get(f"{base}/Users", params={"PageSize": 20}))
            if i % 3 == 0:
                out.append(c.delete(f"{base}/Users/{ident}"))
            return out

    with ThreadPoolExecutor(32) as pool:
        results = [r for rs in pool.map(work, range(64)) for r in rs]
    bad = [(r.request.method, str(r.request.url), r.status_code, r.text[:200]) for r in results if r.status_code >= 400]
    assert not bad, bad[:5]


def test_very_many_form_fields_never_5xx(bb: BB, svc: dict[str, Any]) -> None:
    body = b"Identity=many-fields&" + b"&".join(b"F%d=x" % i for i in range(5000))
    assert_not_5xx(form_post(bb, f"/v2/Services/{svc['sid']}/Users", body))
    body = b"FriendlyName=r&Type=deployment&" + b"&".join(b"Permission=p%d" % i for i in range(3000))
    assert_not_5xx(form_post(bb, f"/v2/Services/{svc['sid']}/Roles", body))
