"""Every route answers exactly its declared methods (SPEC §7).

HEAD once deleted services, roles and API keys: the item handlers treated every method that was
neither GET nor POST as DELETE. Here every route is sent GET, HEAD, POST, PUT, PATCH, DELETE,
OPTIONS, TRACE and an unknown method on real resources, and after each request the whole state
is read back: nothing may change unless that method is the route's declared way to change it.
"""

from __future__ import annotations

import base64
import json
import socket
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from conftest import Api, Server, assert_error

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "FROB")
# Methods whose declared handler changes state: those are exercised by the resource tests.
CHANGING = {"POST", "DELETE"}


def _world(api: Api) -> dict[str, Any]:
    """Resources whose survival is checked after every request."""
    svc = api.new_service("methods")
    s = svc["sid"]
    role = api.post(f"/v2/Services/{s}/Roles", {"FriendlyName": "r", "Type": "deployment",
                                                "Permission": "createChannel"}).json()
    user = api.post(f"/v2/Services/{s}/Users", {"Identity": "alice/b@example.com", "RoleSid": role["sid"]}).json()
    spare = api.post(f"/v2/Services/{s}/Roles", {"FriendlyName": "spare", "Type": "channel",
                                                 "Permission": "sendMessage"}).json()
    key = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {"FriendlyName": "k"}).json()
    return {"IS": s, "RL": spare["sid"], "US": user["sid"], "identity": user["identity"], "SK": key["sid"]}


def _routes(w: dict[str, Any], account_sid: str) -> list[tuple[str, set[str]]]:
    """(path, declared methods) of every HTTP route, on the real resources of `w`."""
    s, ident = w["IS"], quote(w["identity"], safe="")
    return [
        ("/healthz", {"GET"}),
        ("/readyz", {"GET"}),
        ("/metrics", {"GET"}),
        ("/openapi.json", {"GET"}),
        ("/.well-known/jwks.json", {"GET"}),
        ("/.well-known/openid-configuration", {"GET"}),
        ("/v2/Services", {"GET", "POST"}),
        (f"/v2/Services/{s}", {"GET", "POST", "DELETE"}),
        (f"/v2/Services/{s}/Tokens", {"POST"}),
        (f"/v2/Services/{s}/Roles", {"GET", "POST"}),
        (f"/v2/Services/{s}/Roles/{w['RL']}", {"GET", "POST", "DELETE"}),
        (f"/v2/Services/{s}/Users", {"GET", "POST"}),
        (f"/v2/Services/{s}/Users/{w['US']}", {"GET", "POST", "DELETE"}),
        (f"/v2/Services/{s}/Users/{ident}", {"GET", "POST", "DELETE"}),
        (f"/v2/Services/{s}/Users/{w['US']}/Channels", {"GET"}),
        (f"/v2/Services/{s}/Users/{ident}/Bindings", {"GET"}),
        (f"/2010-04-01/Accounts/{account_sid}/Keys.json", {"GET", "POST"}),
        (f"/2010-04-01/Accounts/{account_sid}/Keys/{w['SK']}.json", {"GET", "POST", "DELETE"}),
    ]


def _snapshot(api: Api, w: dict[str, Any]) -> list[Any]:
    s = w["IS"]
    reads = [f"/v2/Services/{s}", f"/v2/Services/{s}/Roles?PageSize=100", f"/v2/Services/{s}/Users?PageSize=100",
             f"/v2/Services/{s}/Roles/{w['RL']}", f"/v2/Services/{s}/Users/{w['US']}",
             f"/2010-04-01/Accounts/{api.account_sid}/Keys/{w['SK']}.json",
             f"/2010-04-01/Accounts/{api.account_sid}/Keys.json?PageSize=100", "/v2/Services?PageSize=100"]
    out = []
    for url in reads:
        r = api.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text)
        out.append(r.json())
    return out


def test_every_route_answers_exactly_its_methods_and_nothing_else_changes(api: Api) -> None:
    w = _world(api)
    before = _snapshot(api, w)
    checked = 0
    for path, declared in _routes(w, api.account_sid):
        allowed = declared | ({"HEAD"} if "GET" in declared else set())
        for method in ALL_METHODS:
            if method in declared & CHANGING:
                continue
            r = api.client.request(method, path, auth=api.auth)
            if method in allowed:
                assert r.status_code == 200, (method, path, r.status_code, r.text)
                if method == "HEAD":
                    assert r.content == b"", (path, r.content[:100])
                    get = api.get(path)
                    assert r.headers["content-type"] == get.headers["content-type"]
            else:
                if method == "HEAD":  # no body to read: a HEAD answer has none
                    assert r.status_code == 405 and r.content == b""
                else:
                    assert_error(r, 405, 20004)
                assert set(r.headers["allow"].replace(" ", "").split(",")) == allowed, (method, path, r.headers)
            after = _snapshot(api, w)
            assert after == before, f"{method} {path} changed state"
            checked += 1
    assert checked > 100


def test_head_answers_like_get_without_the_body(api: Api) -> None:
    w = _world(api)
    url = f"/v2/Services/{w['IS']}/Users/{w['US']}"
    get, head = api.get(url), api.client.head(url, auth=api.auth)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(get.content)
    # A HEAD for a missing resource is the GET's 404, not a deletion of anything.
    missing = api.client.head(f"/v2/Services/{w['IS']}/Roles/RL{'0' * 32}", auth=api.auth)
    assert missing.status_code == 404 and missing.content == b""
    # Unauthenticated HEAD: the GET's 401.
    assert api.client.head(url).status_code == 401


def test_undeclared_method_is_refused_before_authentication(api: Api) -> None:
    """405 comes from the route's declaration, not from a handler that read credentials."""
    r = api.client.request("PATCH", f"/v2/Services/IS{'0' * 32}")
    assert_error(r, 405, 20004)
    r = api.client.request("POST", f"/v2/Services/IS{'0' * 32}/Users/someone/Channels")
    assert_error(r, 405, 20004)
    assert r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("kind", ["service", "role", "key"])
def test_head_on_a_real_server_deletes_nothing(server: Server, kind: str) -> None:
    """What a monitoring probe or `curl -I` sends, through a real uvicorn."""
    auth = server.auth
    with httpx.Client(base_url=server.base, auth=auth, timeout=10) as http:
        svc = http.post("/v2/Services", data={"FriendlyName": "probe"}).json()
        urls = {
            "service": f"/v2/Services/{svc['sid']}",
            "role": f"/v2/Services/{svc['sid']}/Roles/" + http.post(
                f"/v2/Services/{svc['sid']}/Roles",
                data={"FriendlyName": "r", "Type": "channel", "Permission": "sendMessage"}).json()["sid"],
            "key": f"/2010-04-01/Accounts/{server.account_sid}/Keys/"
                   + http.post(f"/2010-04-01/Accounts/{server.account_sid}/Keys.json").json()["sid"] + ".json",
        }
        url = urls[kind]
        for _ in range(3):
            r = http.head(url)
            assert r.status_code == 200 and r.content == b""
        for method in ("OPTIONS", "TRACE", "PUT", "PATCH"):
            assert_error(http.request(method, url), 405, 20004)
        assert http.get(url).status_code == 200


def _raw(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_a_method_the_http_parser_does_not_know_is_405_with_allow_on_a_real_server(server: Server) -> None:
    """httptools refuses methods outside its list before the app sees them: the answer is still
    SPEC §7's 405 20004 with the resource's Allow (404 off any route, 400 for garbage)."""
    with httpx.Client(base_url=server.base, auth=server.auth, timeout=10) as http:
        svc = http.post("/v2/Services", data={"FriendlyName": "frob"}).json()
        role = http.post(f"/v2/Services/{svc['sid']}/Roles",
                         data={"FriendlyName": "r", "Type": "channel", "Permission": "sendMessage"}).json()
        auth = base64.b64encode(f"{server.account_sid}:{server.auth_token}".encode()).decode()
        cases = [
            (f"/v2/Services/{svc['sid']}/Roles/{role['sid']}", 405, "DELETE, GET, HEAD, POST"),
            (f"/v2/Services/{svc['sid']}", 405, "DELETE, GET, HEAD, POST"),
            (f"/v2/Services/{svc['sid']}/Users/someone%2Felse/Channels", 405, "GET, HEAD"),
            (f"/v2/Services/{svc['sid']}/Tokens", 405, "POST"),
            ("/no/such/route", 404, None),
        ]
        for path, status, allow in cases:
            code, headers, body = _raw(server, f"FROB {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                                               "Content-Length: 0\r\n\r\n".encode())
            parsed = json.loads(body)
            assert (code, parsed["status"]) == (status, status), (path, code, body)
            assert parsed["code"] == (20004 if status == 405 else 20404)
            assert headers.get("allow") == allow, (path, headers)
        code, _, body = _raw(server, b"\x01\x02garbage\r\n\r\n")
        assert code == 400 and json.loads(body)["code"] == 20001
        assert http.get(f"/v2/Services/{svc['sid']}/Roles/{role['sid']}").status_code == 200
        assert http.get(f"/v2/Services/{svc['sid']}").status_code == 200
