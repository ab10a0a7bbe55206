"""Abuse limits (issue 6): failed Basic auth per client address and per account SID, the request
body bound, and the per-account token-issuance rate — on real servers, from real client addresses
(every 127.0.0.0/8 address is this host, so an attacker and a valid caller are told apart)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import Server, assert_error, basic, start_server
from tokensvc.config import Settings
from tokensvc.db import Database, make_engine
from tokensvc.store.accounts import create_account

LIMIT = 5


def client_from(server: Server, address: str, **kw: object) -> httpx.Client:
    """An HTTP client whose connections come from `address` (127.x.y.z)."""
    return httpx.Client(base_url=server.base, transport=httpx.HTTPTransport(local_address=address), timeout=10, **kw)


def assert_limited(r: httpx.Response, window: int) -> None:
    assert_error(r, 429, 20429)
    assert 1 <= int(r.headers["Retry-After"]) <= window + 1


@pytest.fixture
def guarded(tmp_path: Path) -> Server:
    srv = start_server(tmp_path, extra_env={"TOKENSVC_AUTH_FAIL_LIMIT": str(LIMIT), "TOKENSVC_AUTH_FAIL_WINDOW": "60"})
    yield srv
    srv.stop()


def test_failed_logins_from_one_address_are_limited_others_unaffected(guarded: Server) -> None:
    wrong = (guarded.account_sid, "not-the-token")
    with client_from(guarded, "127.0.0.2") as attacker, client_from(guarded, "127.0.0.3") as valid:
        for _ in range(LIMIT):
            assert_error(attacker.get("/v2/Services", auth=wrong), 401, 20003)
        assert_limited(attacker.get("/v2/Services", auth=wrong), 60)
        # Refused before the credentials are even looked at, whatever they are.
        assert_limited(attacker.get("/v2/Services", auth=(f"AC{'0' * 32}", "x")), 60)
        assert_limited(attacker.get("/v2/Services", auth=guarded.auth), 60)
        # A valid caller elsewhere is not slowed: same account, immediate 200s.
        started = time.perf_counter()
        for _ in range(10):
            assert valid.get("/v2/Services", auth=guarded.auth).status_code == 200
        assert time.perf_counter() - started < 2
        # Unknown usernames count against the address too.
    with client_from(guarded, "127.0.0.4") as sprayer:
        for n in range(LIMIT):
            assert_error(sprayer.get("/v2/Services", auth=(f"AC{n:032x}", "guess")), 401, 20003)
        assert_limited(sprayer.get("/v2/Services", auth=(f"AC{99:032x}", "guess")), 60)


def test_failed_logins_against_one_account_are_limited_valid_callers_unaffected(guarded: Server) -> None:
    """A spray from many addresses, each under its own limit, trips the account's limit: the
    addresses that failed against it are refused, its valid callers are not."""
    wrong = (guarded.account_sid, "guess")
    attackers = [f"127.0.1.{n}" for n in range(1, LIMIT + 1)]
    for address in attackers:
        with client_from(guarded, address) as c:
            assert_error(c.get("/v2/Services", auth=wrong), 401, 20003)
    for address in attackers:
        with client_from(guarded, address) as c:
            assert_limited(c.get("/v2/Services", auth=wrong), 60)
            assert_limited(c.get("/v2/Services", auth=guarded.auth), 60)
    # The legitimate backend, which never failed, keeps working at full speed.
    with client_from(guarded, "127.0.0.9") as backend:
        for _ in range(5):
            assert backend.get("/v2/Services", auth=guarded.auth).status_code == 200
    # A fresh address gets one guess at the account under attack, then it is refused too.
    with client_from(guarded, "127.0.2.1") as fresh:
        assert_error(fresh.get("/v2/Services", auth=wrong), 401, 20003)
        assert_limited(fresh.get("/v2/Services", auth=wrong), 60)
    # Another account is not under attack: a failure against it from a fresh address is a 401.
    with client_from(guarded, "127.0.2.2") as other:
        assert_error(other.get("/v2/Services", auth=(f"AC{7:032x}", "guess")), 401, 20003)


def test_api_key_sids_are_limited_like_accounts(guarded: Server) -> None:
    with client_from(guarded, "127.0.0.5") as admin:
        key = admin.post(f"/2010-04-01/Accounts/{guarded.account_sid}/Keys.json", auth=guarded.auth).json()
    for n in range(LIMIT):
        with client_from(guarded, f"127.0.3.{n + 1}") as c:
            assert_error(c.post(f"/2010-04-01/Accounts/{guarded.account_sid}/Keys.json",
                                auth=(key["sid"], "guess")), 401, 20003)
    with client_from(guarded, "127.0.3.1") as c:
        assert_limited(c.get("/v2/Services", auth=(key["sid"], key["secret"])), 60)
    with client_from(guarded, "127.0.0.6") as backend:
        assert backend.get("/v2/Services", auth=(key["sid"], key["secret"])).status_code == 200


def test_failed_login_limit_expires_with_its_window(tmp_path: Path) -> None:
    srv = start_server(tmp_path, extra_env={"TOKENSVC_AUTH_FAIL_LIMIT": "2", "TOKENSVC_AUTH_FAIL_WINDOW": "1"})
    try:
        with client_from(srv, "127.0.0.7") as c:
            for _ in range(2):
                assert_error(c.get("/v2/Services", auth=(srv.account_sid, "x")), 401, 20003)
            assert_limited(c.get("/v2/Services", auth=srv.auth), 1)
            time.sleep(1.2)
            assert c.get("/v2/Services", auth=srv.auth).status_code == 200
    finally:
        srv.stop()


# ------------------------------------------------------------------ request bodies


def _raw_request(server: Server, head: str, body_parts: list[bytes], *, wait: float = 5) -> bytes:
    """Send a request head and some body, keep the connection open without finishing the body,
    and return what the server answers within `wait` seconds (it must not wait for the rest)."""
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head.encode("latin-1"))
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed while we were still sending
                break
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not _complete(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _parse(answer: bytes) -> httpx.Response:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    return httpx.Response(status, headers=headers, content=body)


def _head(server: Server, path: str, extra: str) -> str:
    auth = basic(*server.auth)["Authorization"]
    return (f"POST {path} HTTP/1.1\r\nHost: {server.base.removeprefix('http://')}\r\n"
            f"Authorization: {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra}\r\n")


def test_declared_oversized_body_is_refused_before_it_is_sent(server: Server) -> None:
    """Content-Length says 10 MB; only 1 KiB follows and the client then waits: the answer is an
    immediate 413, not a wait for the other 9.99 MB."""
    started = time.monotonic()
    answer = _raw_request(server, _head(server, "/v2/Services", "Content-Length: 10000000\r\n"), [b"F" * 1024])
    assert time.monotonic() - started < 4, "the server waited for the declared body"
    assert_error(_parse(answer), 413, 20001)


def test_chunked_body_is_refused_once_over_the_bound(server: Server) -> None:
    """No Content-Length: 80 KiB of chunks, then the client stalls without the final chunk. A
    server that read the whole body first would never answer; this one answers 413."""
    chunk = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"  # 16 KiB per chunk
    started = time.monotonic()
    answer = _raw_request(server, _head(server, "/v2/Services", "Transfer-Encoding: chunked\r\n"), [chunk] * 5)
    assert time.monotonic() - started < 4, "the server waited for the end of the stream"
    assert_error(_parse(answer), 413, 20001)


def test_body_at_the_bound_is_read_one_byte_over_is_refused(server: Server) -> None:
    bound = 64 * 1024
    url = f"/v2/Services/IS{'0' * 32}/Tokens"
    at = "Identity=" + "x" * (bound - len("Identity="))
    assert len(at) == bound
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    # Read and parsed: the identity is too long (50207), not too large (413).
    assert_error(httpx.post(server.base + url, content=at, headers=headers, auth=server.auth), 400, 50207)
    assert_error(httpx.post(server.base + url, content=at + "x", headers=headers, auth=server.auth), 413, 20001)

    def stream(data: bytes):  # the same bytes as a chunked stream
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    assert_error(httpx.post(server.base + url, content=stream((at + "x").encode()), headers=headers,
                            auth=server.auth), 413, 20001)


# ------------------------------------------------------------------ token issuance rate


def test_token_issuance_is_rate_limited_per_account(tmp_path: Path) -> None:
    rate = 5
    srv = start_server(tmp_path, extra_env={"TOKENSVC_TOKEN_RATE_LIMIT": str(rate)})
    try:
        db = Database(make_engine(Settings(database_url=srv.env["TOKENSVC_DATABASE_URL"])))
        try:
            other = db.call(lambda conn: create_account(conn))
        finally:
            db.dispose()
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            svc = c.post("/v2/Services", data={"FriendlyName": "a"}, auth=srv.auth).json()["sid"]
            other_svc = c.post("/v2/Services", data={"FriendlyName": "b"},
                               auth=(other.sid, other.auth_token)).json()["sid"]
            key = c.post(f"/2010-04-01/Accounts/{srv.account_sid}/Keys.json", auth=srv.auth).json()
            statuses = []
            for n in range(4 * rate):
                # Account credentials and the account's API key share one budget.
                auth = srv.auth if n % 2 else (key["sid"], key["secret"])
                r = c.post(f"/v2/Services/{svc}/Tokens", data={"Identity": f"u{n}"}, auth=auth)
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert_error(r, 429, 20429)
                    assert int(r.headers["Retry-After"]) >= 1
                else:
                    assert r.status_code == 201, r.text
            # A one-second window: at most two windows' worth got through in this burst.
            assert statuses[:rate].count(201) >= 1
            assert statuses.count(201) <= 2 * rate
            assert statuses.count(429) >= 2 * rate
            # The other account has its own budget.
            r = c.post(f"/v2/Services/{other_svc}/Tokens", data={"Identity": "x"}, auth=(other.sid, other.auth_token))
            assert r.status_code == 201, r.text
            # The window passes: the first account may issue again.
            time.sleep(1.05)
            assert c.post(f"/v2/Services/{svc}/Tokens", data={"Identity": "later"}, auth=srv.auth).status_code == 201
    finally:
        srv.stop()


def test_token_issuance_is_unlimited_by_default(api, service) -> None:
    for n in range(40):
        r = api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": f"u{n}"})
        assert r.status_code == 201, r.text
