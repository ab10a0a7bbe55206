"""WebSocket /v2/Connect and presence (SPEC §5), end to end: real `tokensvc serve` processes and a
real `websockets` client."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import Server, database_url, start_server
from tokensvc.config import Settings
from tokensvc.connect import AUTH_TIMEOUT
from tokensvc.db import make_engine
from tokensvc.signing import load_snapshot
from tokensvc.store.tables import connections
from tokensvc.tokens import mint

# ---- helpers ----------------------------------------------------------------------------------


def ws_url(srv: Server) -> str:
    return srv.base.replace("http://", "ws://") + "/v2/Connect"


def open_ws(srv: Server, token: str | None = None) -> ClientConnection:
    headers = {"X-Twilio-Token": token} if token is not None else None
    return connect(ws_url(srv), additional_headers=headers, proxy=None, open_timeout=10)


def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def expect_close(ws: ClientConnection, code: int, timeout: float = 5) -> None:
    try:
        frame = ws.recv(timeout=timeout)
    except ConnectionClosed:
        pass
    else:
        raise AssertionError(f"expected the close, got {frame!r}")
    assert ws.close_code == code, (ws.close_code, ws.close_reason)


def expect_error_then_close(ws: ClientConnection, code: int) -> dict[str, Any]:
    frame = recv(ws)
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert frame["status"] == 401
    assert isinstance(frame["message"], str) and frame["message"]
    expect_close(ws, 4001)
    return frame


def new_service(srv: Server, *, reachability: bool = True) -> dict[str, Any]:
    r = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "chat"}, auth=srv.auth)
    assert r.status_code == 201, r.text
    if reachability:
        set_reachability(srv, r.json()["sid"], True)
    return r.json()


def set_reachability(srv: Server, service_sid: str, enabled: bool) -> None:
    r = httpx.post(f"{srv.base}/v2/Services/{service_sid}",
                   data={"ReachabilityEnabled": "true" if enabled else "false"}, auth=srv.auth)
    assert r.status_code == 200, r.text
    assert r.json()["reachability_enabled"] is enabled


def issue(srv: Server, service_sid: str, identity: str, ttl: int = 3600) -> str:
    """A token from the token endpoint (which also provisions the user)."""
    r = httpx.post(f"{srv.base}/v2/Services/{service_sid}/Tokens",
                   data={"Identity": identity, "Ttl": str(ttl)}, auth=srv.auth)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def mint_local(srv: Server, service_sid: str, identity: str, *, ttl: int = 3600, at: int | None = None) -> str:
    """A token signed with the server's own key, without touching the server (no provisioning)."""
    snapshot = load_snapshot(Path(srv.env["TOKENSVC_KEYS_DIR"]))
    return mint(snapshot, issuer="tokensvc", account_sid=srv.account_sid, service_sid=service_sid,
                identity=identity, ttl=ttl, now=at).token


def fetch_user(srv: Server, service_sid: str, key: str) -> httpx.Response:
    return httpx.get(f"{srv.base}/v2/Services/{service_sid}/Users/{key}", auth=srv.auth)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def online(srv: Server, service_sid: str, identity: str) -> Any:
    r = fetch_user(srv, service_sid, identity)
    assert r.status_code == 200, r.text
    return r.json()["is_online"]


def connection_rows(srv: Server, service_sid: str) -> int:
    """Presence rows of a service, read straight from the server's database."""
    engine = make_engine(Settings(database_url=srv.env["TOKENSVC_DATABASE_URL"]))
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(connections)
                                .where(connections.c.service_sid == service_sid)).scalar_one()
    finally:
        engine.dispose()


def gauge(srv: Server) -> float:
    for line in httpx.get(f"{srv.base}/metrics").text.splitlines():
        if line.startswith("tokensvc_open_connections "):
            return float(line.split()[1])
    raise AssertionError("no tokensvc_open_connections gauge")


# ---- connect, provision, presence ---------------------------------------------------------------


def test_connect_with_header_provisions_user_and_is_online_while_connected(server: Server) -> None:
    svc = new_service(server)
    token = mint_local(server, svc["sid"], "alice")
    assert fetch_user(server, svc["sid"], "alice").status_code == 404
    assert gauge(server) == 0

    with open_ws(server, token) as ws:
        frame = recv(ws)
        assert frame["type"] == "connected"
        user = frame["user"]
        assert user["identity"] == "alice" and user["service_sid"] == svc["sid"]
        assert user["sid"].startswith("US") and user["is_online"] is True
        assert user["url"] == f"{server.base}/v2/Services/{svc['sid']}/Users/{user['sid']}"
        fetched = fetch_user(server, svc["sid"], "alice").json()
        assert fetched["sid"] == user["sid"] and fetched["is_online"] is True
        assert gauge(server) == 1
        assert connection_rows(server, svc["sid"]) == 1
        # Lists never carry presence (SPEC §3).
        listed = httpx.get(f"{server.base}/v2/Services/{svc['sid']}/Users", auth=server.auth).json()
        assert [u["is_online"] for u in listed["users"]] == [None]

    assert wait_for(lambda: online(server, svc["sid"], "alice") is False, 3)
    assert wait_for(lambda: gauge(server) == 0, 3)
    assert connection_rows(server, svc["sid"]) == 0


def test_authenticate_frame_with_twilio_helper_token(server: Server) -> None:
    from twilio.jwt.access_token import AccessToken
    from twilio.jwt.access_token.grants import ChatGrant

    svc = new_service(server)
    r = httpx.post(f"{server.base}/2010-04-01/Accounts/{server.account_sid}/Keys.json",
                   data={"FriendlyName": "backend"}, auth=server.auth)
    assert r.status_code == 201, r.text
    key = r.json()
    at = AccessToken(server.account_sid, key["sid"], key["secret"], identity="bob", ttl=600)
    at.add_grant(ChatGrant(service_sid=svc["sid"]))

    with open_ws(server) as ws:
        ws.send(json.dumps({"type": "authenticate", "token": at.to_jwt()}))
        frame = recv(ws)
        assert frame["type"] == "connected"
        assert frame["user"]["identity"] == "bob" and frame["user"]["is_online"] is True
        assert online(server, svc["sid"], "bob") is True


def test_presence_is_null_without_reachability_and_follows_the_service_setting(server: Server) -> None:
    svc = new_service(server, reachability=False)
    never = issue(server, svc["sid"], "never-connected")
    assert never and online(server, svc["sid"], "never-connected") is None

    with open_ws(server, issue(server, svc["sid"], "carol")) as ws:
        assert recv(ws)["user"]["is_online"] is None
        assert online(server, svc["sid"], "carol") is None
        set_reachability(server, svc["sid"], True)  # takes effect on the very next fetch
        assert online(server, svc["sid"], "carol") is True
        set_reachability(server, svc["sid"], False)
        assert online(server, svc["sid"], "carol") is None
        set_reachability(server, svc["sid"], True)
    assert wait_for(lambda: online(server, svc["sid"], "carol") is False, 3)
    # A user who never connected stays null even with reachability on.
    assert online(server, svc["sid"], "never-connected") is None


# ---- token lifecycle --------------------------------------------------------------------------


def test_short_token_warns_at_once_then_expires_with_4001(server: Server) -> None:
    svc = new_service(server)
    started = time.monotonic()
    with open_ws(server, issue(server, svc["sid"], "dave", ttl=5)) as ws:
        assert recv(ws)["type"] == "connected"
        warning = recv(ws, timeout=1)
        assert warning["type"] == "tokenAboutToExpire" and 0 <= warning["expires_in"] <= 5
        assert recv(ws, timeout=8) == {"type": "tokenExpired"}
        assert 3 <= time.monotonic() - started <= 8
        expect_close(ws, 4001)


def test_update_token_extends_session_and_other_identity_is_refused(server: Server) -> None:
    svc = new_service(server)
    other_svc = new_service(server)
    with open_ws(server, issue(server, svc["sid"], "erin", ttl=5)) as ws:
        assert recv(ws)["type"] == "connected"
        assert recv(ws, timeout=1)["type"] == "tokenAboutToExpire"

        ws.send(json.dumps({"type": "updateToken", "token": issue(server, svc["sid"], "erin", ttl=3600)}))
        assert recv(ws) == {"type": "tokenUpdated"}

        for token in (issue(server, svc["sid"], "mallory"), issue(server, other_svc["sid"], "erin")):
            ws.send(json.dumps({"type": "updateToken", "token": token}))
            refused = recv(ws)
            assert refused["type"] == "error" and refused["code"] == 20403 and refused["status"] == 403

        # Malformed frames are answered, never fatal.
        for bad in ("not json", "[1, 2]", json.dumps({"type": "bogus"}), json.dumps({"type": "updateToken"}),
                    b"\x00binary"):
            ws.send(bad)
            answer = recv(ws)
            assert answer["type"] == "error" and answer["code"] == 20001 and answer["status"] == 400

        # The 5 s token's expiry no longer applies: nothing arrives past it.
        with pytest.raises(TimeoutError):
            ws.recv(timeout=5.5)
        ws.send(json.dumps({"type": "updateToken", "token": issue(server, svc["sid"], "erin")}))
        assert recv(ws) == {"type": "tokenUpdated"}
        assert online(server, svc["sid"], "erin") is True


def test_update_with_a_forged_token_closes_4001(server: Server) -> None:
    svc = new_service(server)
    with open_ws(server, issue(server, svc["sid"], "frank")) as ws:
        assert recv(ws)["type"] == "connected"
        good = issue(server, svc["sid"], "frank")
        ws.send(json.dumps({"type": "updateToken", "token": good[:-4] + ("AAAA" if good[-4:] != "AAAA" else "BBBB")}))
        expect_error_then_close(ws, 20101)


def _bad_tokens(srv: Server, service_sid: str) -> Iterator[tuple[str, int]]:
    good = mint_local(srv, service_sid, "grace")
    head, body, sig = good.split(".")
    yield head + "." + body + "." + sig[::-1], 20101  # forged signature
    yield "not-a-token", 20101
    claims = jwt.decode(good, options={"verify_signature": False})
    yield jwt.encode(claims, key=None, algorithm="none"), 20101  # alg none
    yield jwt.encode(claims, "guessed-secret-" + "x" * 32, algorithm="HS256"), 20101  # HS256 confusion
    yield mint_local(srv, service_sid, "grace", ttl=60, at=int(time.time()) - 3600), 20104  # expired
    yield mint_local(srv, "IS" + "0" * 32, "grace"), 20101  # no such service


def test_bad_tokens_get_an_error_frame_and_close_4001(server: Server) -> None:
    svc = new_service(server)
    bad = list(_bad_tokens(server, svc["sid"]))
    for token, code in bad:
        with open_ws(server, token) as ws:
            expect_error_then_close(ws, code)
        with open_ws(server) as ws:
            ws.send(json.dumps({"type": "authenticate", "token": token}))
            expect_error_then_close(ws, code)
    # A first frame that is not an authenticate frame.
    for first in ("hello", json.dumps({"type": "updateToken"}), json.dumps({"type": "authenticate"})):
        with open_ws(server) as ws:
            ws.send(first)
            expect_error_then_close(ws, 20101)
    assert fetch_user(server, svc["sid"], "grace").status_code == 404  # nobody was provisioned
    logs = server.logs()
    assert "Traceback" not in logs
    assert all(token not in logs for token, _ in bad)  # tokens are never logged


def test_no_authenticate_frame_within_the_deadline_closes(server: Server) -> None:
    started = time.monotonic()
    with open_ws(server) as ws:
        frame = recv(ws, timeout=AUTH_TIMEOUT + 5)
        assert frame["type"] == "error" and frame["code"] == 20101
        expect_close(ws, 4001)
    assert AUTH_TIMEOUT - 1 <= time.monotonic() - started <= AUTH_TIMEOUT + 3


def test_deleting_the_user_closes_its_connections_with_4003(server: Server) -> None:
    svc = new_service(server)
    token = issue(server, svc["sid"], "heidi")
    with open_ws(server, token) as first, open_ws(server, token) as second:
        sid = recv(first)["user"]["sid"]
        assert recv(second)["user"]["sid"] == sid
        r = httpx.delete(f"{server.base}/v2/Services/{svc['sid']}/Users/{sid}", auth=server.auth)
        assert r.status_code == 204
        expect_close(first, 4003, timeout=2)
        expect_close(second, 4003, timeout=2)
    assert fetch_user(server, svc["sid"], "heidi").status_code == 404
    # The identity stays deleted for the still valid token (SPEC §11); a token issued after the
    # deletion provisions a new user.
    with open_ws(server, token) as ws:
        expect_error_then_close(ws, 20101)
    assert fetch_user(server, svc["sid"], "heidi").status_code == 404
    with open_ws(server, issue(server, svc["sid"], "heidi")) as ws:
        assert recv(ws)["user"]["sid"] not in (sid, None)


def test_deleting_the_service_closes_its_connections_with_4003(server: Server) -> None:
    svc = new_service(server)
    token = issue(server, svc["sid"], "ivan")
    with open_ws(server, token) as ws:
        assert recv(ws)["type"] == "connected"
        assert httpx.delete(f"{server.base}/v2/Services/{svc['sid']}", auth=server.auth).status_code == 204
        expect_close(ws, 4003, timeout=2)


# ---- several processes on one database ----------------------------------------------------------


def test_presence_is_shared_between_processes_and_expires_when_one_dies(tmp_path: Path) -> None:
    fast = {"TOKENSVC_PRESENCE_TIMEOUT": "3", "TOKENSVC_HEARTBEAT_INTERVAL": "1"}
    a = start_server(tmp_path, extra_env=fast, name="a")
    b = start_server(tmp_path, database=a.env["TOKENSVC_DATABASE_URL"], keys_dir=Path(a.env["TOKENSVC_KEYS_DIR"]),
                     account=a.auth, extra_env=fast, name="b")
    assert a.env["TOKENSVC_DATABASE_URL"] == b.env["TOKENSVC_DATABASE_URL"] == database_url(tmp_path)
    try:
        svc = new_service(a)
        with open_ws(a, issue(a, svc["sid"], "ivan")) as ivan, open_ws(a, issue(b, svc["sid"], "judy")) as judy:
            assert recv(ivan)["type"] == recv(judy)["type"] == "connected"
            assert online(b, svc["sid"], "ivan") is True
            time.sleep(3.5)  # longer than the presence timeout: only A's heartbeats keep ivan online
            assert online(b, svc["sid"], "ivan") is True

            # Deleted on B: A reads B's kick within a second (not at its next heartbeat).
            assert httpx.delete(f"{b.base}/v2/Services/{svc['sid']}/Users/judy", auth=b.auth).status_code == 204
            deleted = time.monotonic()
            expect_close(judy, 4003, timeout=4)
            assert time.monotonic() - deleted < 1.2

            # A dies without closing anything; B sees ivan go offline once the heartbeat is stale.
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(5)
            killed = time.monotonic()
            assert wait_for(lambda: online(b, svc["sid"], "ivan") is False, 8, interval=0.25)
            assert time.monotonic() - killed <= 3 + 1 + 1  # timeout + heartbeat + whole-second rounding
            # B sweeps the dead process's rows.
            assert wait_for(lambda: connection_rows(b, svc["sid"]) == 0, 8, interval=0.25)
    finally:
        a.stop()
        b.stop()
