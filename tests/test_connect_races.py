"""Client sessions end when what they stand on goes away: the API key that signed their HS256
token, their user or their service (on every replica, within a second: kicks.py), even when the
deletion races the connect itself. Real `tokensvc serve` processes sharing one database and keys dir (a
SQLite file, or PostgreSQL under scripts/with-postgres), the official `twilio` helpers and the
`websockets` client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant
from websockets.exceptions import ConnectionClosed

from conftest import Server, database_url, replica_pair
from test_connect import expect_close, fetch_user, issue, mint_local, new_service, online, open_ws, recv, wait_for
from tokensvc.app import create_app
from tokensvc.config import Settings
from tokensvc.signing import load_snapshot
from tokensvc.store.accounts import create_account
from tokensvc.store.tables import services
from tokensvc.tokens import mint

TIMEOUT = 10


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Replicas A and B: one database (the suite's), one keys directory, one account. The default
    heartbeat (15 s): what closes sessions on the other replica within a second is the kick."""
    with replica_pair(tmp_path) as (a, b):
        yield a, b
    for srv in (a, b):
        assert "Traceback" not in srv.logs(), srv.logs()


def api_key(srv: Server) -> tuple[str, str]:
    r = httpx.post(f"{srv.base}/2010-04-01/Accounts/{srv.account_sid}/Keys.json", data={"FriendlyName": "backend"},
                   auth=srv.auth, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return r.json()["sid"], r.json()["secret"]


def twilio_token(srv: Server, key: tuple[str, str], service_sid: str, identity: str, ttl: int = 600) -> str:
    minted = AccessToken(srv.account_sid, key[0], key[1], identity=identity, ttl=ttl)
    minted.add_grant(ChatGrant(service_sid=service_sid))
    return minted.to_jwt()


def closed_with_error(ws: Any, code: int, close: int, timeout: float) -> float:
    """Wait for an error frame with that Twilio code, then the close; the seconds it took."""
    started = time.monotonic()
    frame = recv(ws, timeout=timeout)
    assert frame["type"] == "error" and frame["code"] == code and frame["status"] == 401, frame
    expect_close(ws, close, timeout=timeout)
    return time.monotonic() - started


def test_deleting_an_api_key_closes_its_sessions_on_every_replica_within_a_second(
        pair: tuple[Server, Server]) -> None:
    a, b = pair
    svc = new_service(a)["sid"]
    key = api_key(a)
    es256 = issue(a, svc, "es-user")  # tokensvc-signed: no API key behind it
    with open_ws(b, twilio_token(a, key, svc, "hs-user")) as on_b, \
            open_ws(a, twilio_token(a, key, svc, "hs-user-a")) as on_a, open_ws(b, es256) as es_on_b:
        for ws in (on_b, on_a, es_on_b):
            assert recv(ws)["type"] == "connected"
        r = httpx.delete(f"{a.base}/2010-04-01/Accounts/{a.account_sid}/Keys/{key[0]}.json", auth=a.auth,
                         timeout=TIMEOUT)
        assert r.status_code == 204, r.text
        deleted = time.monotonic()
        took_a = closed_with_error(on_a, 20101, 4001, timeout=3)  # the deleting process: at once
        took_b = closed_with_error(on_b, 20101, 4001, timeout=3)  # another replica: by its poll
        assert took_a < 0.5, took_a
        assert time.monotonic() - deleted < 1.2, (took_a, took_b)
        # The ES256 session of the same service is untouched, and still online.
        with pytest.raises(TimeoutError):
            es_on_b.recv(timeout=1.5)
        assert online(a, svc, "es-user") is True
        es_on_b.send(json.dumps({"type": "updateToken", "token": issue(a, svc, "es-user")}))
        assert recv(es_on_b)["type"] == "tokenUpdated"
    assert wait_for(lambda: online(a, svc, "hs-user") is False, 5)
    # And the key's tokens stay refused, on connect as on HTTP.
    with open_ws(b, twilio_token(a, key, svc, "hs-user")) as again:
        closed_with_error(again, 20101, 4001, timeout=5)


def test_deleting_a_user_closes_its_sessions_on_every_replica_within_a_second(pair: tuple[Server, Server]) -> None:
    a, b = pair
    svc = new_service(a)["sid"]
    token = issue(a, svc, "doomed")
    with open_ws(a, token) as on_a, open_ws(b, token) as on_b, open_ws(b, issue(a, svc, "bystander")) as other:
        sid = recv(on_a)["user"]["sid"]
        assert recv(on_b)["user"]["sid"] == sid and recv(other)["type"] == "connected"
        r = httpx.delete(f"{a.base}/v2/Services/{svc}/Users/{sid}", auth=a.auth, timeout=TIMEOUT)
        assert r.status_code == 204, r.text
        deleted = time.monotonic()
        expect_close(on_a, 4003, timeout=3)
        took_a = time.monotonic() - deleted
        expect_close(on_b, 4003, timeout=3)  # B: by the kick, long before its next heartbeat (15 s)
        took_b = time.monotonic() - deleted
        assert took_a < 0.5 and took_b < 1.2, (took_a, took_b)
        with pytest.raises(TimeoutError):  # another user of the service stays connected
            other.recv(timeout=1)
        assert online(b, svc, "bystander") is True
    assert fetch_user(b, svc, "doomed").status_code == 404


def test_deleting_a_service_closes_its_sessions_on_every_replica_within_a_second(
        pair: tuple[Server, Server]) -> None:
    a, b = pair
    svc, kept = new_service(a)["sid"], new_service(a)["sid"]
    with open_ws(b, issue(a, svc, "tenant")) as on_b, open_ws(a, issue(a, svc, "tenant-a")) as on_a, \
            open_ws(b, issue(a, kept, "tenant")) as elsewhere:
        for ws in (on_b, on_a, elsewhere):
            assert recv(ws)["type"] == "connected"
        assert httpx.delete(f"{a.base}/v2/Services/{svc}", auth=a.auth, timeout=TIMEOUT).status_code == 204
        deleted = time.monotonic()
        expect_close(on_a, 4003, timeout=3)
        expect_close(on_b, 4003, timeout=3)
        assert time.monotonic() - deleted < 1.2
        with pytest.raises(TimeoutError):  # the same identity in another service stays connected
            elsewhere.recv(timeout=1)


def test_a_session_that_switched_to_an_es256_token_outlives_the_deleted_key(pair: tuple[Server, Server]) -> None:
    a, b = pair
    svc = new_service(a)["sid"]
    key = api_key(a)
    with open_ws(b, twilio_token(a, key, svc, "switcher")) as ws:
        assert recv(ws)["type"] == "connected"
        ws.send(json.dumps({"type": "updateToken", "token": issue(a, svc, "switcher")}))
        assert recv(ws)["type"] == "tokenUpdated"
        r = httpx.delete(f"{a.base}/2010-04-01/Accounts/{a.account_sid}/Keys/{key[0]}.json", auth=a.auth,
                         timeout=TIMEOUT)
        assert r.status_code == 204
        with pytest.raises(TimeoutError):
            ws.recv(timeout=2)


# ---- a connect racing the deletion of its service ------------------------------------------------


def test_connect_after_its_service_was_deleted_elsewhere_closes_4003_with_an_error_frame(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The service is still in this process's cache (as when another replica deleted it a moment
    # ago): the token verifies, and the join's user insert meets the foreign key.
    settings = Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys", cache_seconds=60)
    app = create_app(settings)
    c = app.state.ctx
    made = c.db.call(lambda conn: create_account(conn))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v2/Services", data={"FriendlyName": "doomed"}, auth=(made.sid, made.auth_token))
        assert r.status_code == 201, r.text
        svc = r.json()["sid"]
        snapshot = load_snapshot(settings.keys_dir)

        def token(identity: str) -> str:
            return mint(snapshot, issuer="tokensvc", account_sid=made.sid, service_sid=svc, identity=identity,
                        ttl=600).token

        with client.websocket_connect("/v2/Connect", headers={"X-Twilio-Token": token("primer")}) as ws:
            assert ws.receive_json()["type"] == "connected"  # the service is cached now
        c.db.call(lambda conn: conn.execute(services.delete().where(services.c.sid == svc)))
        with caplog.at_level("INFO"):
            with client.websocket_connect("/v2/Connect", headers={"X-Twilio-Token": token("latecomer")}) as ws:
                frame = ws.receive_json()
                assert frame["type"] == "error" and frame["code"] == 20404, frame
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
                assert closed.value.code == 4003
    assert not [rec for rec in caplog.records if rec.exc_info], [rec.getMessage() for rec in caplog.records]


def test_connects_racing_the_deletion_of_their_service_never_close_1011(pair: tuple[Server, Server]) -> None:
    a, b = pair
    for round_ in range(3):
        svc = new_service(a)["sid"]
        tokens = [mint_local(a, svc, f"racer-{round_}-{i}") for i in range(24)]
        codes: list[Any] = []
        go = threading.Barrier(len(tokens) + 1)

        # go and codes are this round's (passed, not closed over): a thread that outlives its
        # join() must not wait on, or append to, the next round's.
        def connect(token: str, srv: Server, go: threading.Barrier, codes: list[Any]) -> None:
            go.wait()
            try:
                with open_ws(srv, token) as ws:
                    try:
                        while True:
                            ws.recv(timeout=5)
                    except ConnectionClosed:
                        codes.append(ws.close_code)
                    except TimeoutError:
                        codes.append("still open")
            except Exception as exc:  # handshake refused: a server error
                codes.append(repr(exc))

        threads = [threading.Thread(target=connect, args=(t, (a, b)[i % 2], go, codes)) for i, t in enumerate(tokens)]
        for t in threads:
            t.start()
        go.wait()
        time.sleep(0.02 * round_)
        assert httpx.delete(f"{a.base}/v2/Services/{svc}", auth=a.auth, timeout=TIMEOUT).status_code == 204
        for t in threads:
            t.join(20)
        assert len(codes) == len(tokens)
        assert set(codes) <= {4001, 4003}, codes  # refused or kicked, never 1011 or left open
        assert fetch_user(a, svc, f"racer-{round_}-0").status_code == 404


def test_a_key_deleted_elsewhere_closes_sessions_and_refuses_new_ones_despite_a_cached_copy(
        tmp_path: Path) -> None:
    # Another replica deleted the key: here only its kick row says so, while this process still
    # has the key cached (cache_seconds=60). The open session closes, and a token of that key
    # opens no session that would outlive the kick.
    from tokensvc.store import kicks
    from tokensvc.store.api_keys import create_key
    from tokensvc.store.tables import api_keys

    settings = Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys", cache_seconds=60)
    app = create_app(settings)
    c = app.state.ctx
    made = c.db.call(lambda conn: create_account(conn))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v2/Services", data={"FriendlyName": "keyed"}, auth=(made.sid, made.auth_token))
        assert r.status_code == 201, r.text
        svc = r.json()["sid"]
        key, secret = c.db.call(lambda conn: create_key(conn, account_sid=made.sid, friendly_name="k", box=c.box))
        minted = AccessToken(made.sid, key["sid"], secret, identity="cached", ttl=600)
        minted.add_grant(ChatGrant(service_sid=svc))
        token = minted.to_jwt()
        with client.websocket_connect("/v2/Connect", headers={"X-Twilio-Token": token}) as ws:
            assert ws.receive_json()["type"] == "connected"  # the key is cached now

            def elsewhere(conn: Any) -> None:
                conn.execute(api_keys.delete().where(api_keys.c.sid == key["sid"]))
                kicks.record(conn, kicks.API_KEY, key["sid"])

            c.db.call(elsewhere)
            started = time.monotonic()
            frame = ws.receive_json()
            assert frame["type"] == "error" and frame["code"] == 20101, frame
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4001 and time.monotonic() - started < 1.2
        with client.websocket_connect("/v2/Connect", headers={"X-Twilio-Token": token}) as ws:
            frame = ws.receive_json()
            assert frame["type"] == "error" and frame["code"] == 20101, frame
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4001
