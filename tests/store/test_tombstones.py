"""A deleted user stays deleted (SPEC §11): a token issued before the deletion of its identity
does not re-provision it (401 20101, on HTTP and on /v2/Connect, on every replica); a token
issued after does. The tombstone holds no identity, and goes once no token can need it."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from starlette.testclient import TestClient
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from conftest import PG_URL, Server, assert_error, database_url, replica_pair
from fresh_db import KINDS, fresh_database
from test_connect import expect_error_then_close, mint_local, new_service, open_ws, recv
from tokensvc.app import create_app
from tokensvc.config import Settings
from tokensvc.lifetimes import LEEWAY, acceptable_for
from tokensvc.signing import load_snapshot
from tokensvc.store import tombstones as tombstones_module
from tokensvc.store.accounts import create_account
from tokensvc.store.tables import tombstones
from tokensvc.tokens import Verified

TIMEOUT = 10


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Replicas A and B on one database (a SQLite file, or PostgreSQL) and one keys directory."""
    with replica_pair(tmp_path) as (a, b):
        yield a, b
    for srv in (a, b):
        logs = srv.logs()
        assert "Traceback" not in logs, logs
        assert "zoe@example.com" not in logs and "yann@example.com" not in logs


def users_url(srv: Server, service_sid: str, key: str = "") -> str:
    return f"{srv.base}/v2/Services/{service_sid}/Users" + (f"/{key}" if key else "")


def as_client(srv: Server, service_sid: str, token: str, key: str) -> httpx.Response:
    return httpx.get(users_url(srv, service_sid, key), headers={"X-Twilio-Token": token}, timeout=TIMEOUT)


def identities(srv: Server, service_sid: str) -> list[str]:
    r = httpx.get(users_url(srv, service_sid), auth=srv.auth, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return [u["identity"] for u in r.json()["users"]]


def test_token_issued_before_a_deletion_through_a_is_refused_by_b(pair: tuple[Server, Server]) -> None:
    a, b = pair
    svc = new_service(a)["sid"]
    key = httpx.post(f"{a.base}/2010-04-01/Accounts/{a.account_sid}/Keys.json", auth=a.auth, timeout=TIMEOUT).json()
    issued = httpx.post(f"{a.base}/v2/Services/{svc}/Tokens", data={"Identity": "zoe@example.com"}, auth=a.auth,
                        timeout=TIMEOUT).json()
    helper = AccessToken(a.account_sid, key["sid"], key["secret"], identity="zoe@example.com", ttl=600)  # nbf only
    helper.add_grant(ChatGrant(service_sid=svc))
    old_tokens = [issued["token"], helper.to_jwt()]
    assert as_client(b, svc, old_tokens[1], "zoe@example.com").status_code == 200

    gone = httpx.delete(users_url(a, svc, issued["user_sid"]), auth=a.auth, timeout=TIMEOUT)
    assert gone.status_code == 204, gone.text
    for token in old_tokens:
        assert_error(as_client(b, svc, token, "zoe@example.com"), 401, 20101)
        assert_error(as_client(a, svc, token, "zoe@example.com"), 401, 20101)
        with open_ws(b, token) as ws:
            expect_error_then_close(ws, 20101)
    assert identities(a, svc) == [] and identities(b, svc) == []  # not re-created, under any SID

    time.sleep(1.1)  # issue times are whole seconds: the same second as the deletion counts as before
    fresh = AccessToken(a.account_sid, key["sid"], key["secret"], identity="zoe@example.com", ttl=600)
    fresh.add_grant(ChatGrant(service_sid=svc))
    r = as_client(b, svc, fresh.to_jwt(), "zoe@example.com")
    assert r.status_code == 200, r.text
    assert r.json()["sid"] != issued["user_sid"]
    assert identities(a, svc) == ["zoe@example.com"]
    # Nor does a token issued before the deletion reach the user created after it.
    for token in old_tokens:
        assert_error(as_client(b, svc, token, "zoe@example.com"), 401, 20101)
        with open_ws(b, token) as ws:
            expect_error_then_close(ws, 20101)


def test_token_minted_after_the_deletion_connects_and_provisions_a_new_user(pair: tuple[Server, Server]) -> None:
    a, b = pair
    svc = new_service(a)["sid"]
    made = httpx.post(users_url(a, svc), data={"Identity": "yann@example.com"}, auth=a.auth, timeout=TIMEOUT)
    assert made.status_code == 201
    before = mint_local(a, svc, "yann@example.com", at=int(time.time()) - 5)
    assert httpx.delete(users_url(a, svc, "yann@example.com"), auth=a.auth, timeout=TIMEOUT).status_code == 204
    with open_ws(b, before) as ws:
        expect_error_then_close(ws, 20101)
    after = mint_local(a, svc, "yann@example.com", at=int(time.time()) + 2)  # within the 30 s skew
    with open_ws(b, after) as ws:
        frame = recv(ws)
        assert frame["type"] == "connected", frame
        assert frame["user"]["sid"] != made.json()["sid"]
    # POST /Tokens always provisions: the backend asked anew.
    r = httpx.post(f"{a.base}/v2/Services/{svc}/Tokens", data={"Identity": "yann@example.com"}, auth=a.auth,
                   timeout=TIMEOUT)
    assert r.status_code == 201 and r.json()["user_created"] is False, r.text


# ---- in-process: the store ------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def fresh_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any, Settings, str]]:
    """A TestClient on an empty database of each kind, the app context, settings, account SID."""
    with fresh_database(request.param, tmp_path) as url:
        settings = Settings(database_url=url, keys_dir=tmp_path / "keys")
        app = create_app(settings)
        made = app.state.ctx.db.call(lambda conn: create_account(conn))
        with TestClient(app, raise_server_exceptions=False) as client:
            client.auth = (made.sid, made.auth_token)
            yield client, app.state.ctx, settings, made.sid


def _service(client: TestClient) -> str:
    r = client.post("/v2/Services", data={"FriendlyName": "graves"})
    assert r.status_code == 201, r.text
    return r.json()["sid"]


def _token(settings: Settings, account_sid: str, service_sid: str, identity: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"jti": secrets.token_hex(8), "iss": "tokensvc", "sub": account_sid, "iat": now, "nbf": now,
            "exp": now + 600, "grants": {"identity": identity, "chat": {"service_sid": service_sid}}}
    body.update(claims)
    return load_snapshot(settings.keys_dir).active.sign({k: v for k, v in body.items() if v is not None})


def test_a_returning_user_created_before_its_token_costs_no_tombstone_read(fresh_app: Any) -> None:
    client, c, settings, _ = fresh_app
    svc = _service(client)
    made = client.post(f"/v2/Services/{svc}/Tokens", data={"Identity": "regular"})
    assert made.status_code == 201
    token = made.json()["token"]
    # Without the table every tombstone read would fail: the hot path must not make one.
    c.db.call(lambda conn: conn.execute(text("DROP TABLE tombstones")))
    for _ in range(3):
        r = client.get(f"/v2/Services/{svc}/Users/regular", headers={"X-Twilio-Token": token}, auth=None)
        assert r.status_code == 200, r.text
    with client.websocket_connect("/v2/Connect", headers={"X-Twilio-Token": token}) as ws:
        assert ws.receive_json()["type"] == "connected"


def test_token_without_iat_or_nbf_counts_as_issued_as_early_as_it_could_be(fresh_app: Any) -> None:
    client, c, settings, account = fresh_app
    svc = _service(client)
    assert client.post(f"/v2/Services/{svc}/Users", data={"Identity": "undated"}).status_code == 201
    undated = _token(settings, account, svc, "undated", iat=None, nbf=None)  # exp alone: now + 600
    assert client.delete(f"/v2/Services/{svc}/Users/undated").status_code == 204
    r = client.get(f"/v2/Services/{svc}/Users/undated", headers={"X-Twilio-Token": undated}, auth=None)
    assert_error(r, 401, 20101)
    # nbf alone (Twilio's helper) is the issue time; iat wins over nbf where both are there.
    later = int(time.time()) + 2
    assert client.get(f"/v2/Services/{svc}/Users/undated", auth=None,
                      headers={"X-Twilio-Token": _token(settings, account, svc, "undated", iat=None, nbf=later)}
                      ).status_code == 200
    assert client.delete(f"/v2/Services/{svc}/Users/undated").status_code == 204
    both = _token(settings, account, svc, "undated", iat=later - 10, nbf=later)
    assert_error(client.get(f"/v2/Services/{svc}/Users/undated", headers={"X-Twilio-Token": both}, auth=None),
                 401, 20101)
    graves = c.tombstones
    v = Verified(account, svc, "x", expires_at=10_000_000, key_sid=None)
    assert graves.issued_at(v) == 10_000_000 - settings.max_ttl - LEEWAY


def test_tombstone_holds_no_identity_bytes(tmp_path: Path) -> None:
    if PG_URL:
        pytest.skip("reads the SQLite file")
    settings = Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys")
    app = create_app(settings)
    made = app.state.ctx.db.call(lambda conn: create_account(conn))
    identity = "tombstone-probe-" + secrets.token_hex(6) + "@example.com"
    with TestClient(app, raise_server_exceptions=False) as client:
        client.auth = (made.sid, made.auth_token)
        svc = _service(client)
        assert client.post(f"/v2/Services/{svc}/Tokens", data={"Identity": identity}).status_code == 201
        assert client.delete(f"/v2/Services/{svc}/Users/{identity}").status_code == 204  # checkpoints the WAL
        rows = app.state.ctx.db.call(lambda conn: conn.execute(select(tombstones)).mappings().all())
    assert len(rows) == 1
    digest = rows[0]["digest"]
    assert len(digest) == 64 and int(digest, 16) >= 0
    # Keyed: not a plain hash anyone could recompute from a guessed identity.
    assert digest != hashlib.sha256((svc + identity).encode()).hexdigest()
    # A token issued in the deletion's second may live max_ttl + LEEWAY and then be accepted
    # LEEWAY more: the tombstone outlives it.
    assert rows[0]["expires_at"] == rows[0]["deleted_at"] + settings.max_ttl + 2 * LEEWAY + 1
    files = [p for p in tmp_path.iterdir() if p.name.startswith("tokensvc.db")]
    assert files
    for path in files:
        data = path.read_bytes()
        for form in (identity.encode("utf-8"), identity.encode("utf-16-le")):
            assert form not in data, path


def test_expired_tombstones_are_swept(fresh_app: Any) -> None:
    client, c, settings, _ = fresh_app
    svc = _service(client)
    graves = c.tombstones
    long_ago = int(time.time()) - acceptable_for(settings.max_ttl) - 5
    c.db.call(lambda conn: graves.bury(conn, service_sid=svc, identity="ancient", at=long_ago))
    digests = lambda: set(c.db.call(lambda conn: conn.execute(select(tombstones.c.digest)).scalars().all()))  # noqa: E731
    assert graves.digest(svc, "ancient") in digests()
    assert client.post(f"/v2/Services/{svc}/Users", data={"Identity": "recent"}).status_code == 201
    assert client.delete(f"/v2/Services/{svc}/Users/recent").status_code == 204  # a deletion sweeps
    assert digests() == {graves.digest(svc, "recent")}
    c.db.call(lambda conn: graves.bury(conn, service_sid=svc, identity="ancient", at=long_ago))
    assert c.db.call(lambda conn: tombstones_module.sweep(conn, int(time.time()))) == 1  # the Hub's periodic sweep
    assert digests() == {graves.digest(svc, "recent")}


def test_one_burst_of_connects_refuses_the_tokens_from_before_a_deletion_and_joins_the_others(
        db: Any) -> None:
    import asyncio
    import os

    from prometheus_client import CollectorRegistry, Counter

    from tokensvc.presence import Presence
    from tokensvc.store.services import create_service
    from tokensvc.store.tombstones import Tombstones

    account = db.call(lambda conn: create_account(conn))
    svc = db.call(lambda conn: dict(create_service(conn, account_sid=account.sid, friendly_name="burst")))
    graves = Tombstones(os.urandom(32), max_ttl=3600)
    deleted_at = int(time.time()) - 100
    for i in range(10):
        db.call(lambda conn, i=i: graves.bury(conn, service_sid=svc["sid"], identity=f"gone-{i}", at=deleted_at))
    writes = Counter("w", "w", ["kind"], registry=CollectorRegistry())

    async def scenario() -> list[Any]:
        presence = Presence(db, node="node-graves", timeout=30, interval=10, writes=writes,
                            on_gone=lambda cid: None, graves=graves)
        presence.start()
        try:
            joins = [presence.join(f"CN-graves-{i}", svc, f"gone-{i % 10}",
                                   deleted_at - 1 if i < 10 else deleted_at + 1) for i in range(20)]
            return await asyncio.gather(*joins, return_exceptions=True)
        finally:
            await presence.stop()

    results = asyncio.run(scenario())
    refused = [r for r in results[:10]]
    assert all(getattr(r, "code", None) == 20101 and r.status == 401 for r in refused), refused
    joined = results[10:]
    assert all(isinstance(r, tuple) for r in joined), joined
    assert sorted(user["identity"] for user, _ in joined) == sorted(f"gone-{i}" for i in range(10))


def test_a_tombstone_outlives_the_last_moment_any_token_issued_before_it_is_accepted(tmp_path: Path) -> None:
    """The longest-lived token issued in the deletion's second (exp = iat + max_ttl + skew, then
    accepted for one more skew) is refused by its tombstone to its very last acceptable moment."""
    from tokensvc.signing import Keyring
    from tokensvc.tokens import mint, verify

    max_ttl, deleted = 3600, 2_000_000_000
    snap = Keyring(tmp_path / "keys").current()
    token = mint(snap, issuer="t", account_sid="AC" + "1" * 32, service_sid="IS" + "1" * 32, identity="a",
                 ttl=max_ttl + LEEWAY, now=deleted).token
    graves = tombstones_module.Tombstones(b"k" * 32, max_ttl=max_ttl)
    last = deleted + max_ttl + 2 * LEEWAY - 0.001
    verified = verify(token, snapshot=snap, lookup_api_key=lambda sid: None, max_ttl=max_ttl, now=last)
    expires_at = deleted + acceptable_for(max_ttl)
    assert expires_at >= last  # sweep deletes rows with expires_at < now: not yet
    assert graves.refuses_since(deleted, graves.issued_at(verified))
